# SPDX-License-Identifier: Apache-2.0
# Shared by scripts/demo, scripts/test and scripts/device-check: install what a fresh Debian 12
# machine with the CUDA toolkit lacks, and find nvcc.

# ensure_packages pkg...: installs the Debian packages that are missing (apt-get, as root or
# through sudo), updating the package lists only if the first attempt fails.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "frugal: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${missing[@]}" ||
    { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${missing[@]}"; }
}

# find_nvcc: prints the path of nvcc (PATH, then the toolkit's usual place), or fails.
find_nvcc() {
  if command -v nvcc >/dev/null 2>&1; then command -v nvcc; return 0; fi
  local c
  for c in "${CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  echo "frugal: nvcc not found; install the CUDA toolkit or put nvcc on PATH" >&2
  return 1
}

# jobs: parallel build jobs for this machine.
jobs() { nproc 2>/dev/null || echo 2; }

# ensure_cuda_binary_tools <dir>: prints the folder holding cuobjdump and nvdisasm (the compile
# tier reads the SASS of the tensor-core kernels with them). The toolkit's own when it has
# them; otherwise NVIDIA's wheels from PyPI, unpacked into <dir> (not installed anywhere).
ensure_cuda_binary_tools() {
  local dir=$1 nvcc_dir
  nvcc_dir=$(dirname "$(find_nvcc)")
  if [ -x "$nvcc_dir/cuobjdump" ] && [ -x "$nvcc_dir/nvdisasm" ]; then echo "$nvcc_dir"; return 0; fi
  if [ -x "$dir/bin/cuobjdump" ] && [ -x "$dir/bin/nvdisasm" ]; then echo "$dir/bin"; return 0; fi
  python3 -m pip --version >/dev/null 2>&1 || ensure_packages python3-pip >&2
  local wheels
  wheels=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --dest "$wheels" \
    nvidia-cuda-cuobjdump==13.5.37 nvidia-cuda-nvdisasm==13.5.37 >&2 || { rm -rf "$wheels"; return 1; }
  mkdir -p "$dir/bin"
  local w
  for w in "$wheels"/*.whl; do
    python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.endswith("/bin/cuobjdump") or n.endswith("/bin/nvdisasm"):
        open(sys.argv[2] + "/" + n.rsplit("/", 1)[1], "wb").write(z.read(n))' "$w" "$dir/bin"
  done
  rm -rf "$wheels"
  chmod +x "$dir/bin/cuobjdump" "$dir/bin/nvdisasm"
  echo "$dir/bin"
}
