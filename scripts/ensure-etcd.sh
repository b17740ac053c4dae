#!/usr/bin/env bash
# Makes sure etcd (the server the fleet tests coordinate through) and protoc with protobuf's
# well-known .proto files (which the etcd client crate needs to build its gRPC stubs) are
# installed (Debian/Ubuntu: apt).
set -euo pipefail
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "${missing[*]} missing: run 'apt-get install ${missing[*]}' as root" >&2
      exit 1
    fi
  fi
  echo "installing ${missing[*]} with apt-get ..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian package may start a system etcd on 2379; the tests never use it.
  if command -v systemctl >/dev/null 2>&1; then $sudo systemctl stop etcd 2>/dev/null || true; fi
else
  echo "${missing[*]} missing: install etcd (package etcd-server), protoc and its .proto files (packages protobuf-compiler, libprotobuf-dev) and run again" >&2
  exit 1
fi
