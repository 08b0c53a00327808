#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the source the llama-cpp-python sdist on PyPI vendors (Debian has no
# llama.cpp package), once: the binary is cached under $FORGE_SERVERS (default /var/tmp/forge-servers) and
# this script prints its path. About 6 minutes on 2 cores the first time, nothing after.
set -euo pipefail
root="${FORGE_SERVERS:-/var/tmp/forge-servers}"
version=0.3.36
bin="$root/llama-server-$version"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$root"
work=$(mktemp -d "$root/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check cmake==4.2.0
"$work/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-python \
  "llama-cpp-python==$version" -d "$work/dl" >&2
tar -xzf "$work/dl/llama_cpp_python-$version.tar.gz" -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
# GGML_NATIVE=OFF: the cached binary must not depend on this machine's CPU features.
nice -n 19 "$work/venv/bin/cmake" -S "$src" -B "$work/b" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DBUILD_SHARED_LIBS=OFF >&2
nice -n 19 "$work/venv/bin/cmake" --build "$work/b" --target llama-server -j "$(nproc)" >&2
install -m 755 "$work/b/bin/llama-server" "$bin.tmp" && mv "$bin.tmp" "$bin"
echo "$bin"
