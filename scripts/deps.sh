#!/bin/sh
# Makes sure the Debian packages tritlm needs are installed. As root it
# installs what is missing with apt-get; otherwise it prints the command.
set -eu
PKGS="cmake make gcc libc6-dev libcmocka-dev libcjson-dev libsodium-dev libmosquitto-dev mosquitto mosquitto-clients openssl gnuplot-nox
  gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
  gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf gcc-xtensa-lx106 picolibc-xtensa-lx106-elf gcc-12-source
  qemu-system-misc"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
echo "tritlm needs these Debian packages:$missing" >&2
if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >&2
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    # shellcheck disable=SC2086
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
else
    echo "install them with:  sudo apt-get install$missing" >&2
    exit 1
fi
