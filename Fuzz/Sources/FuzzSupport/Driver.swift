// The fuzz targets' `main`: hands the callback to libFuzzer's driver.
import CLibFuzzer

/// Runs libFuzzer on `callback` with the process's arguments (libFuzzer's flags and corpus
/// folders) and returns its exit status. Each target calls it from `@_cdecl("<Target>_main")`,
/// which SwiftPM links as the executable's `main`.
public func runLibFuzzer(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt {
    var count = argc
    var arguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv
    return LLVMFuzzerRunDriver(&count, &arguments, callback)
}
