// A deliberately slow-starting HTTP server for the zeropod-swift benchmarks: before it listens it
// fills a heap of ZP_HEAP_MIB MiB (every page written, so it is really resident) and burns about
// ZP_BURN_MS milliseconds of CPU, like an application that warms caches at boot. Then it answers
// every request with a body that names the heap and a checksum over it.
// Environment: ZP_PORT (8080), ZP_HEAP_MIB (256), ZP_BURN_MS (3000).

import com.sun.net.httpserver.HttpServer;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;

public final class ZeropodBench {
    /** Kept reachable for the life of the process, so the heap stays resident. */
    private static byte[][] heap;

    private static int env(String name, int fallback) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? fallback : Integer.parseInt(v);
    }

    public static void main(String[] args) throws Exception {
        int port = env("ZP_PORT", 8080);
        int heapMiB = env("ZP_HEAP_MIB", 256);
        int burnMs = env("ZP_BURN_MS", 3000);

        long seed = 0x9E3779B97F4A7C15L;
        heap = new byte[heapMiB][];
        long checksum = 0;
        for (int i = 0; i < heapMiB; i++) {
            byte[] block = new byte[1 << 20];
            for (int j = 0; j < block.length; j += 512) {
                seed = seed * 6364136223846793005L + 1442695040888963407L;
                block[j] = (byte) (seed >>> 56);
                checksum += block[j];
            }
            heap[i] = block;
        }

        long deadline = System.nanoTime() + burnMs * 1_000_000L;
        long burn = 0;
        while (System.nanoTime() < deadline) {
            for (int k = 0; k < 100_000; k++) {
                burn = burn * 2862933555777941757L + 3037000493L;
            }
        }

        byte[] body = ("zeropod jvm heap=" + heapMiB + "MiB checksum=" + checksum + " burn=" + (burn & 0xffff) + "\n")
                .getBytes(StandardCharsets.UTF_8);
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 128);
        server.createContext("/", exchange -> {
            exchange.getResponseHeaders().add("Content-Type", "text/plain");
            exchange.sendResponseHeaders(200, body.length);
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        });
        server.setExecutor(null);
        server.start();
        System.out.println("zeropod jvm listening on " + port);
    }
}
