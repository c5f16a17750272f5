#!/usr/bin/env bash
# Regenerates cluster/actorcluster/actorpb/envelope.pb.go from envelope.proto.
#
# Usage: bash cluster/actorcluster/actorpb/generate.sh [OUT_ROOT]
#
# OUT_ROOT stands for the module root (default: the real one, so the file
# lands next to the .proto). generate_test.go passes a temporary directory
# to check that the committed file is up to date.
#
# Needs protoc on PATH (Debian: apt-get install protobuf-compiler) or in
# $PROTOC. protoc-gen-go is the tool version pinned in go.mod, built into a
# temporary directory, so nothing is installed globally.
set -euo pipefail

pkg_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module_root="$(cd "$pkg_dir/../../.." && pwd)"
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

(
	cd "$module_root"
	go build -o "$bin_dir/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
)

# The path relative to the module root becomes the file's name in the
# process-wide protobuf registry; a bare "envelope.proto" could collide with
# another package's file of that name and fail at init.
cd "$module_root"
"$protoc" \
	--plugin=protoc-gen-go="$bin_dir/protoc-gen-go" \
	--proto_path=. \
	--go_out="$out_root" --go_opt=module="$module" \
	cluster/actorcluster/actorpb/envelope.proto
