#!/usr/bin/env bash
# Build MinkowskiEngine 0.5.4 (the optional "minkowski" sparse backend) against .venv's torch and
# install it there. MinkowskiEngine is unmaintained since 2021: its Python sources need small fixes for
# Python >= 3.10 (collections.abc), and its setup.py runs `pip uninstall` and `rm -rf build` when
# imported; both are patched here. The C++ compiles unchanged with torch 2.14 (warnings only).
#
#   bash tools/build_minkowski.sh [--cpu-only | --force-cuda]   # ~10 min on 2 cores; needs libopenblas-dev
#
# The wheel is left in build/minkowski/dist/ and installed with --no-deps (pip never touches torch).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$ROOT/.venv/bin/python"
VERSION=0.5.4
WORK="$ROOT/build/minkowski"
[ -x "$PYTHON" ] || { echo "no $PYTHON: run 'bash tools/test.sh' or source tools/bootstrap.sh first" >&2; exit 1; }

# MinkowskiEngine builds its CUDA kernels when torch sees a GPU; --force-cuda builds them without one
# (set TORCH_CUDA_ARCH_LIST then, e.g. "8.0;9.0"), --cpu-only never.
case "${1:-}" in
    --cpu-only) DEVICE=--cpu_only ;;
    --force-cuda) DEVICE=--force_cuda ;;
    "") DEVICE="" ;;
    *) echo "unknown option $1 (use --cpu-only or --force-cuda)" >&2; exit 2 ;;
esac
if [ -z "$(find /usr/include /usr/local/include -name cblas.h -print -quit 2>/dev/null)" ]; then
    echo "cblas.h not found: install OpenBLAS headers first (Debian/Ubuntu: apt-get install libopenblas-dev)" >&2
    exit 1
fi

mkdir -p "$WORK"
SOURCE="$WORK/MinkowskiEngine-$VERSION"
if [ ! -d "$SOURCE" ]; then
    # The sdist from the package index (PIP_INDEX_URL or PyPI), checked against the index's sha256
    # (`pip download` would run the unpatched setup.py to read its metadata).
    "$PYTHON" - "$VERSION" "$WORK" "${PIP_INDEX_URL:-https://pypi.org/simple}" <<'EOF'
import hashlib, re, sys, tarfile, urllib.parse, urllib.request
version, work, index = sys.argv[1:4]
page_url = f"{index.rstrip('/')}/minkowskiengine/"
page = urllib.request.urlopen(page_url).read().decode()
name = f"MinkowskiEngine-{version}.tar.gz"
match = re.search(rf'href="([^"]*/{re.escape(name)})#sha256=([0-9a-f]{{64}})"', page)
if not match:
    sys.exit(f"{name} (with a sha256) is not listed on {page_url}")
data = urllib.request.urlopen(urllib.parse.urljoin(page_url, match.group(1))).read()
if hashlib.sha256(data).hexdigest() != match.group(2):
    sys.exit(f"sha256 mismatch for {name}")
with open(f"{work}/{name}", "wb") as handle:
    handle.write(data)
tarfile.open(f"{work}/{name}").extractall(work, filter="data")
EOF
    sed -i -e 's/^run_command("rm", "-rf", "build")/# &/' -e 's/^run_command("pip", "uninstall".*/# &/' "$SOURCE/setup.py"
    grep -rl "^from collections import Sequence" "$SOURCE/MinkowskiEngine" | xargs sed -i \
        -e 's/^from collections import Sequence, namedtuple$/from collections import namedtuple\nfrom collections.abc import Sequence/' \
        -e 's/^from collections import Sequence$/from collections.abc import Sequence/'
fi

cd "$SOURCE"
MAX_JOBS="${MAX_JOBS:-$(nproc)}" PATH="$ROOT/.venv/bin:$PATH" \
    "$PYTHON" setup.py bdist_wheel $DEVICE --blas=openblas -d "$WORK/dist"
cd "$ROOT"  # import the installed package, not the source tree
"$PYTHON" -m pip install --no-deps --force-reinstall "$WORK"/dist/[Mm]inkowski[Ee]ngine-"$VERSION"-*.whl
"$PYTHON" -c "import MinkowskiEngine as ME; print('MinkowskiEngine', ME.__version__, 'CUDA' if ME.is_cuda_available() else 'CPU')"
