#!/bin/sh
# The README's demo: build the hello enclave with the SDK, sign it, show what was signed,
# run it on the default simulated machine, verify that machine's SEV certificate chain,
# and launch the example SEV guest the way its owner would (examples/sev-guest/flow.sh).
# Runs from the repository root with the memcrypt tools on PATH (`make demo` arranges it).
set -eu
out=demo-out  # not build/: package builds put their scratch files there
mkdir -p "$out"

echo "== build examples/hello with the enclave SDK"
cc $(sgxtool sdk --cflags) -O2 examples/hello/hello.c $(sgxtool sdk --ldflags) -o "$out/hello.elf"

echo "== the page layout sgxtool measures"
sgxtool layout "$out/hello.elf" -c examples/hello/enclave.toml

echo "== a signing key (RSA-3072, e=3, mode 0600)"
[ -f "$out/key.pem" ] || sgxtool keygen "$out/key.pem"

echo "== sign: MRENCLAVE and MRSIGNER"
sgxtool sign "$out/hello.elf" -c examples/hello/enclave.toml -k "$out/key.pem" \
    -o "$out/hello.signed.elf" --sig "$out/hello.sig"

echo "== the SIGSTRUCT, decoded"
sgxtool dump "$out/hello.signed.elf"

echo "== verify: signature, exponent, Q1/Q2 and MRENCLAVE recomputed from the image"
sgxtool verify "$out/hello.signed.elf"

echo "== the default simulated machine and its SGX launch policy"
hwsim sgx launch-control show

echo "== run the enclave: load, EINIT under that policy, call the hello ECALL"
sgxtool run "$out/hello.signed.elf" hello --in-text "memcrypt"

echo "== the AMD side: the simulated secure processor and its certificate chain"
sevtool show
sevtool export --full "$out/sev-chain.cert"    # one file, in sevctl's format
sevtool verify "$out/sev-chain.cert"

echo "== an SEV guest: the owner verifies the launch before releasing its disk key"
make -s -C examples/sev-guest O="$(pwd)/$out/sev-guest" "$(pwd)/$out/sev-guest/guest.bin"
sh examples/sev-guest/flow.sh "$out/sev-guest"

echo "== one physical memory: each range, who owns it, under which key (SME off by default)"
hwsim mem map

echo "== the attack lab: what each protection stops (scratch machines, deleted afterwards)"
hwsim attack --matrix
