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
