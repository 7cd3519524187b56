#!/bin/sh
# A release pipeline for an SGX enclave, as a CI job runs it: build, sign, verify, check the
# signed identity against the release policy, run a smoke ECALL on the simulator. Any
# violation fails the job (non-zero exit) with one line saying which.
#
# The signing key comes from the CI's secret store or from an HSM, never from the repository:
#   SGX_SIGNING_KEY_PEM        the PEM key itself (a masked CI secret variable), or
#   SGX_SIGNING_KEY_FILE       a path to it (GitLab "file" variables), with optionally
#   SGX_SIGNING_KEY_PASSPHRASE its passphrase; or
#   SGX_SIGNING_KEY_URI        a PKCS#11 URI (pkcs11:token=...;object=...) with SGX_HSM_PIN.
# The policy: EXPECTED_MRSIGNER (required), MIN_ISVSVN and ISVPRODID (policy.env), DEBUG off.
# OUT (default: ./ci-out) receives the signed enclave and its SIGSTRUCT JSON.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-ci-out}
mkdir -p "$out"
. "$here/policy.env"
fail() { echo "pipeline: policy violation: $*" >&2; exit 1; }
: "${EXPECTED_MRSIGNER:?set EXPECTED_MRSIGNER to the release key's MRSIGNER (64 hex digits)}"
# A fresh simulated machine per job unless the job names one.
export HWSIM_MACHINE="${HWSIM_MACHINE:-$out/machine}"

echo "== build"
cc $(sgxtool sdk --cflags) -O2 "$here/smoke.c" $(sgxtool sdk --ldflags) -o "$out/smoke.elf"

echo "== sign"
umask 077
if [ -n "${SGX_SIGNING_KEY_URI:-}" ]; then
    : "${SGX_HSM_PIN:?set SGX_HSM_PIN (the token PIN) for SGX_SIGNING_KEY_URI}"
    set -- -k "$SGX_SIGNING_KEY_URI" --passphrase-env SGX_HSM_PIN
else
    key=${SGX_SIGNING_KEY_FILE:-}
    if [ -z "$key" ]; then
        : "${SGX_SIGNING_KEY_PEM:?set SGX_SIGNING_KEY_PEM, SGX_SIGNING_KEY_FILE or SGX_SIGNING_KEY_URI}"
        key="$out/signing-key.pem"
        trap 'rm -f "$out/signing-key.pem"' EXIT
        printf '%s\n' "$SGX_SIGNING_KEY_PEM" > "$key"
    fi
    set -- -k "$key"
    [ -n "${SGX_SIGNING_KEY_PASSPHRASE:-}" ] && set -- "$@" --passphrase-env SGX_SIGNING_KEY_PASSPHRASE
fi
sgxtool sign "$out/smoke.elf" -c "$here/enclave.toml" "$@" -o "$out/smoke.signed.elf"

echo "== verify"
sgxtool verify "$out/smoke.signed.elf"

echo "== policy"
sgxtool dump --json "$out/smoke.signed.elf" > "$out/sigstruct.json"
python3 - "$out/sigstruct.json" "$EXPECTED_MRSIGNER" "$MIN_ISVSVN" "$ISVPRODID" <<'PY' || exit 1
import json, sys
path, mrsigner, min_svn, prodid = sys.argv[1], sys.argv[2].lower(), int(sys.argv[3]), int(sys.argv[4])
info = json.load(open(path))
sig = info["sigstruct"]
problems = []
if info["mrsigner"] != mrsigner:
    problems.append(f"MRSIGNER is {info['mrsigner']}, the release key's is {mrsigner}")
if sig["debug"] or "DEBUG" in sig["attributes"]["flag_names"]:
    problems.append("the enclave is signed as a DEBUG enclave")
if sig["isvsvn"] < min_svn:
    problems.append(f"ISVSVN is {sig['isvsvn']}, the policy needs at least {min_svn}")
if sig["isvprodid"] != prodid:
    problems.append(f"ISVPRODID is {sig['isvprodid']}, the policy says {prodid}")
for problem in problems:
    print(f"pipeline: policy violation: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "policy ok: MRSIGNER $EXPECTED_MRSIGNER, ISVSVN >= $MIN_ISVSVN, DEBUG off"

echo "== smoke ECALL on the simulator"
answer=$(sgxtool run "$out/smoke.signed.elf" ping --in-text "release check")
[ "$answer" = "pong: release check" ] || fail "ping answered '$answer'"
echo "$answer"
echo "== pipeline passed"
