#!/usr/bin/env bash
# Regenerates the Go code for the .proto files under api/ration.
#
# Usage: bash api/generate.sh [OUT_ROOT]
#
# OUT_ROOT is the directory standing for the module root (default: the real
# module root, so files land in api/rationv1). api/generate_test.go passes a
# temporary directory to check that the committed files are up to date.
#
# Needs protoc on PATH (Debian: apt-get install protobuf-compiler) or in
# $PROTOC. The Go plugins are the tool versions pinned in go.mod, built
# into a temporary directory, so nothing is installed globally.
set -euo pipefail

api_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_root="$(cd "$api_dir/.." && pwd)"
out_root="${1:-$module_root}"
mkdir -p "$out_root"
out_root="$(cd "$out_root" && pwd)"
module="github.com/ration/ration"

protoc="${PROTOC:-protoc}"
if ! command -v "$protoc" >/dev/null 2>&1; then
	echo "generate.sh: protoc not found; install it (Debian/Ubuntu: apt-get install -y protobuf-compiler) or set PROTOC" >&2
	exit 1
fi

bin_dir="$(mktemp -d)"
trap 'rm -rf "$bin_dir"' EXIT

# Build the plugins at the versions pinned by the tool lines of go.mod.
(
	cd "$module_root"
	go build -o "$bin_dir/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
	go build -o "$bin_dir/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
)

# Paths relative to api/ so the descriptors name the files "ration/v1/...",
# matching their package, and no absolute path leaks into the output.
cd "$api_dir"
mapfile -t protos < <(find ration -name '*.proto' | LC_ALL=C sort)

"$protoc" \
	--plugin=protoc-gen-go="$bin_dir/protoc-gen-go" \
	--plugin=protoc-gen-go-grpc="$bin_dir/protoc-gen-go-grpc" \
	--proto_path=. \
	--go_out="$out_root" --go_opt=module="$module" \
	--go-grpc_out="$out_root" --go-grpc_opt=module="$module" \
	"${protos[@]}"
