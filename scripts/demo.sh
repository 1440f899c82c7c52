#!/usr/bin/env bash
# The main job on one machine: a container that scales to zero and comes back.
# The shim (containerd-shim-zeropod-v2) is not built yet (issue 6): say so and stop.
set -euo pipefail
echo "make demo: the zeropod shim is not there yet; it arrives with the ZPShim issue." >&2
echo "Until then, 'make test' builds and tests the pieces that exist." >&2
exit 1
