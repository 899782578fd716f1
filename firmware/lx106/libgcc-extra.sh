#!/bin/sh
# Debian's libgcc for xtensa-lx106-elf lacks integer division and most
# soft-float routines (the ESP8266 has them in its ROM). Builds them from
# GCC's own assembly source (Debian package gcc-12-source) into
# OUTDIR/libgcc-lx106-extra.a.
# usage: libgcc-extra.sh OUTDIR
set -eu
out=$1
tarball=$(ls /usr/src/gcc-12/gcc-12*.tar.xz 2>/dev/null | grep -v gm2 | head -1 || true)
if [ -z "$tarball" ]; then
    echo "libgcc-extra.sh: GCC's source is missing (apt-get install gcc-12-source)" >&2
    exit 2
fi
CC=xtensa-lx106-elf-gcc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
top=$(basename "$tarball" .tar.xz | sed 's/-dfsg$//')
tar -xJf "$tarball" -C "$work" --wildcards "$top/libgcc/config/xtensa/*"
S=$work/$top/libgcc/config/xtensa/lib1funcs.S
inc=$(dirname "$($CC -print-libgcc-file-name)")/plugin/include
for f in _divsi3 _udivsi3 _modsi3 _umodsi3 _umulsidi3 _addsubsf3 _mulsf3 _fixunssfsi _floatsisf _floatunsisf \
         _addsubdf3 _muldf3 _divdf3 _fixdfsi _fixunsdfsi _floatsidf _floatunsidf _truncdfsf2 _extendsfdf2 \
         _fixsfdi _fixunssfdi _floatdisf _fixdfdi _fixunsdfdi _floatdidf _cmpdf2 _negsf2 _negdf2; do
    if grep -q "ifdef L$f\$" "$S" "$(dirname "$S")"/ieee754-*.S; then
        "$CC" -c -O2 -mtext-section-literals -Wa,--text-section-literals -I"$inc" "-DL$f" "$S" -o "$work/$f.o"
    fi
done
xtensa-lx106-elf-ar rcs "$out/libgcc-lx106-extra.a.tmp" "$work"/_*.o
mv "$out/libgcc-lx106-extra.a.tmp" "$out/libgcc-lx106-extra.a"
