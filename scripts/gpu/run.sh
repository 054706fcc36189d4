#!/usr/bin/env bash
# Runs on the GPU machine, from the project root, as .gpu/run.sh (`pnpm gpu:pack` puts it
# there): unpacks what it packed, points Dawn at the NVIDIA Vulkan driver, puts the
# packed node first on PATH, then runs "$@".
set -eo pipefail
root=$(pwd)
for f in .gpu/debs/*.deb; do dpkg -x "$f" /; done
ldconfig
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
  [ -f "$icd" ] && export VK_DRIVER_FILES="$icd" && break
done
[ -f .gpu/.unpacked ] || { xz -dc .gpu/deps.tar.xz | tar -xf - -C "$root"; touch .gpu/.unpacked; }
if [ -f .gpu/node.xz ]; then
  mkdir -p /tmp/gpu-node/bin
  [ -x /tmp/gpu-node/bin/node ] || { xz -dc .gpu/node.xz > /tmp/gpu-node/bin/node; chmod +x /tmp/gpu-node/bin/node; }
  export PATH=/tmp/gpu-node/bin:$PATH
fi
export PATH=$root/node_modules/.bin:$PATH
echo "node $(node --version), Vulkan driver ${VK_DRIVER_FILES:-not found}, GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo none)"
exec "$@"
