#!/usr/bin/env bash
# Installs everything imgtool needs to build, test and benchmark on Debian 12.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config
  libarchive-dev libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libyaml-cpp-dev
  libcli11-dev libgtest-dev libgmock-dev libzstd-dev zlib1g-dev libseccomp-dev
  # real clients the tests check imgtool's output with
  skopeo umoci oci-image-tool podman runc pigz zstd busybox-static
  # registry for the registry tests
  docker-registry apache2-utils openssl
  # benchmarks and the default recipe
  mmdebstrap debootstrap hyperfine crun bubblewrap iproute2 iptables e2fsprogs
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "dependencies ok"
