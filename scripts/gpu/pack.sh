#!/usr/bin/env bash
# `pnpm gpu:pack`: packs what a GPU run needs into .gpu/ at the project root
# (git-ignored): the installed node_modules (pnpm links kept, the pinned Node
# with them), and the Vulkan loader that Dawn (the `webgpu` package) needs.
# Copy the project's tracked files plus .gpu/ to the GPU machine and, from
# the project root there, run:
#   bash .gpu/run.sh <your command>
# Re-run it after `pnpm install` changes what must travel.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
mkdir -p .gpu
cp "$here/run.sh" .gpu/run.sh

# The project's own Node (a `node` devDependency lands in node_modules/.bin) travels inside
# deps.tar.xz; otherwise the machine's node is packed on its own.
if [ -x node_modules/.bin/node ]; then
  rm -f .gpu/node.xz
else
  node_bin=$(command -v node)
  if [ ! -f .gpu/node.xz ] || [ "$node_bin" -nt .gpu/node.xz ]; then
    echo "packing node $(node --version)"
    xz -T0 -3 -c "$node_bin" > .gpu/node.xz
  fi
fi

if ! ls .gpu/debs/libvulkan1_*.deb >/dev/null 2>&1; then
  echo "downloading the Vulkan loader packages"
  mkdir -p .gpu/debs /tmp/gpu-apt/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/gpu-apt'
  apt-get $o update >/dev/null
  (cd .gpu/debs && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null 2>&1)
fi

# Everything ignored that a run needs: node_modules at every level.
mapfile -t extra < <(git ls-files --others --ignored --exclude-standard --directory \
  | grep -E '(^|/)node_modules/$' | grep -v '^\.gpu/' | grep -vE 'node_modules/.+node_modules/' || true)
echo "packing: ${extra[*]:-nothing}"
# GPU_PACK_EXCLUDE: more tar patterns to leave out (space-separated), e.g. tools a GPU run never needs.
excludes=(--exclude='*.map' --exclude='*/webgpu/dist/win32-*' --exclude='*/webgpu/dist/darwin-*'
          --exclude='*/webgpu/dist/linux-arm64' --exclude='*/.cache')
for pat in ${GPU_PACK_EXCLUDE:-}; do excludes+=(--exclude="$pat"); done
tar "${excludes[@]}" -cf - "${extra[@]}" | xz -T0 -6 > .gpu/deps.tar.xz
du -sh .gpu/* | sed 's/^/  /'
echo "largest packages (leave out with GPU_PACK_EXCLUDE if a GPU run does not need them):"
du -sk node_modules/.pnpm/* 2>/dev/null | sort -rn | head -6 | sed 's/^/  /'
total=$(( $(du -sk .gpu | cut -f1) + $(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1) ))
echo "about ${total} KiB will travel"
