// libzstd (Debian's libzstd-dev) for the migration image archives (decision 0050), and
// <sys/xattr.h>, which Glibc's Swift module does not export (overlayfs opaque directories).
// Nothing else: ZPImageArchive wraps both.
#include <zstd.h>
#include <sys/xattr.h>
