#!/bin/sh
# The guest owner's verified launch of examples/sev-guest on a simulated machine:
#   1. the owner verifies the platform's certificate chain and makes a launch session
#      for its PDH;
#   2. the host launches the guest with that session (LAUNCH_START, LAUNCH_UPDATE_DATA)
#      and reports the launch measurement (LAUNCH_MEASURE);
#   3. the owner recomputes the measurement from the image it expects and the session's
#      TIK, and only if they agree packages the disk key as a launch secret;
#   4. the host injects it (LAUNCH_SECRET), finishes the launch and runs the guest, which
#      unlocks its disk with the key and prints the plaintext on its serial port.
# Usage: sh flow.sh OUTDIR [IMAGE]   (OUTDIR holds guest.bin and disk.key from `make O=OUTDIR`;
# IMAGE, default OUTDIR/guest.bin, is what the host launches: give a tampered copy to see
# the owner refuse.) Uses the machine in $HWSIM_MACHINE (or the default one).
# With SEV_ES=1 the guest is OUTDIR/guest-es.bin launched as SEV-ES with $NUM_CPUS vCPUs
# (default 2): their VMSAs are measured too, and its serial output reaches the host only
# through its #VC handler and GHCB.
set -eu
out=${1:?usage: flow.sh OUTDIR [IMAGE]}
policy=0x1  # NODBG: not even the host's debug commands may read the guest
expected=$out/guest.bin
vmsa=""
cpus=1
if [ "${SEV_ES:-0}" = 1 ]; then
    policy=0x5  # NODBG, ES
    expected=$out/guest-es.bin
    cpus=${NUM_CPUS:-2}
    sevtool vmsa build "$out/vmsa0.bin" --cpu 0 >/dev/null
    sevtool vmsa build "$out/vmsa1.bin" --cpu 1 --firmware "$expected" >/dev/null
    vmsa="--num-cpus $cpus --vmsa-cpu0 $out/vmsa0.bin --vmsa-cpu1 $out/vmsa1.bin"
fi
image=${2:-$expected}
owner=$out/owner
mkdir -p "$owner"

echo "== owner: verify the platform's chain, then make a session for its PDH"
sevtool export --full "$owner/chain" >/dev/null
sevtool verify "$owner/chain"
sevtool session "$owner/chain" --policy $policy --name vm -o "$owner" --force

echo "== host: launch the guest with the owner's session, report the measurement"
sevtool guest launch "$image" --name sev-guest --policy $policy \
    --session "$owner/vm_session.b64" --dh-cert "$owner/vm_godh.b64" --num-cpus $cpus
sevtool guest measure --guest sev-guest --json > "$out/measure.json"
blob=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["measurement"])' "$out/measure.json")
version=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["api_major"], j["api_minor"], j["build_id"])' "$out/measure.json")
set -- $version

echo "== owner: recompute the measurement from the expected image and the TIK"
if ! sevtool measurement verify --api-major "$1" --api-minor "$2" --build-id "$3" \
        --policy $policy --tik "$owner/vm_tik.bin" --firmware "$expected" $vmsa \
        --launch-measure-blob "$blob"; then
    echo "== owner: measurement mismatch: the disk key is NOT released" >&2
    sevtool guest decommission --guest sev-guest
    exit 1
fi

echo "== owner: the measurement matches; package the disk key as a launch secret"
sevtool secret build --tik "$owner/vm_tik.bin" --tek "$owner/vm_tek.bin" \
    --launch-measure-blob "$blob" --secret "luks-key:$out/disk.key" \
    "$owner/secret_header.bin" "$owner/secret_payload.bin"

echo "== host: inject the secret, finish the launch and run the guest"
sevtool guest inject-secret --guest sev-guest "$owner/secret_header.bin" "$owner/secret_payload.bin"
sevtool guest finish --guest sev-guest >/dev/null
sevtool guest run --guest sev-guest

echo "== host: what the hypervisor sees of the secret area: ciphertext"
sevtool guest dump --guest sev-guest --gpa 0x800000 --length 64
sevtool guest decommission --guest sev-guest
