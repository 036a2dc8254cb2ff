#!/usr/bin/env bash
# Install the `mmdet` extra (MMDetProposer: Mask R-CNN, Mask2Former, Co-DETR) into the current Python
# environment: mmcv 2.1.0 with its compiled ops, then mmdet 3.3.0.
#
#     PYTHON=.venv/bin/python bash tools/install_mmdet.sh      # or with the venv activated
#
# PyPI has no mmcv 2.x wheel with ops, only the sdist, and that sdist does not build against torch 2.14
# as it is (specs/environment.md). This script builds it the way that works:
#   * pip download the mmcv==2.1.0 sdist; in its setup.py raise `-std=c++17` to `-std=c++20` (torch's
#     headers need C++20);
#   * MMCV_WITH_OPS=1 MAX_JOBS=2, `pip wheel --no-build-isolation` against the environment's own torch,
#     with setuptools<82 (newer setuptools has no pkg_resources);
#   * cache the wheel under $RESEG_WHEEL_CACHE (default ~/.cache/reseg/wheels/mmcv-2.1.0-torch<version>-<python>),
#     so the ~13 minute build (2 CPU cores) happens once per torch/Python version; later installs take seconds;
# then install the wheel and mmdet==3.3.0 (the extra `pip install -e .[mmdet]` names the same pin).
#
# Environment: PYTHON (default: python), RESEG_WHEEL_CACHE, MAX_JOBS (default 2), REBUILD=1 to ignore
# the cached wheel.
set -euo pipefail

PYTHON="${PYTHON:-python}"
MMCV_VERSION=2.1.0
MMDET_VERSION=3.3.0
MAX_JOBS="${MAX_JOBS:-2}"

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "error: $PYTHON cannot import torch; activate the reseg environment or set PYTHON=.venv/bin/python" >&2
    exit 1
fi
TORCH_VERSION="$("$PYTHON" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
PY_TAG="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
CACHE_ROOT="${RESEG_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reseg/wheels}"
WHEEL_DIR="$CACHE_ROOT/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PY_TAG"

# setuptools<82 for the build and at run time (mmengine's config inheritance needs pkg_resources)
"$PYTHON" -m pip install --quiet "setuptools<82" wheel

find_wheel() { ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1; }

WHEEL="$(find_wheel || true)"
if [[ -n "${REBUILD:-}" || -z "$WHEEL" ]]; then
    BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/reseg-mmcv-build.XXXXXX")"
    trap 'rm -rf "$BUILD_DIR"' EXIT
    echo "building mmcv $MMCV_VERSION with ops for torch $TORCH_VERSION ($PY_TAG); about 13 minutes on 2 cores"
    echo "  build dir: $BUILD_DIR"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$BUILD_DIR"
    tar -xzf "$BUILD_DIR/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD_DIR"
    SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
    if ! grep -q -- "-std=c++17" "$SRC/setup.py"; then
        echo "error: $SRC/setup.py has no -std=c++17 flag to raise; has the sdist changed?" >&2
        exit 1
    fi
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    mkdir -p "$WHEEL_DIR"
    (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="$MAX_JOBS" \
        "$PYTHON" -m pip wheel --no-deps --no-build-isolation --wheel-dir "$BUILD_DIR/dist" .)
    BUILT="$(ls "$BUILD_DIR"/dist/mmcv-"$MMCV_VERSION"-*.whl | head -n 1)"
    # copy then rename: an interrupted copy never looks like a cached wheel
    cp "$BUILT" "$WHEEL_DIR/.partial.whl"
    mv "$WHEEL_DIR/.partial.whl" "$WHEEL_DIR/$(basename "$BUILT")"
    WHEEL="$(find_wheel)"
    echo "cached $WHEEL"
else
    echo "using the cached $WHEEL"
fi

"$PYTHON" -m pip install --quiet "$WHEEL"
"$PYTHON" -m pip install --quiet "mmdet==$MMDET_VERSION" "setuptools<82"
"$PYTHON" -c "import mmcv, mmdet, mmcv.ops; from mmdet.apis import init_detector, inference_detector; \
print(f'mmcv {mmcv.__version__} (ops ok), mmdet {mmdet.__version__}: MMDetProposer is ready')"
