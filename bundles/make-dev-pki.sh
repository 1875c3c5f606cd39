#!/bin/sh
# DEVELOPMENT ONLY. Makes a throw-away PKI for signing test bundles:
#   root CA -> intermediate CA -> code-signing certificate (EKU codeSigning,
#   which verification requires by default: [keyring] check-purpose = codesign).
# The keys are NOT encrypted and anyone holding them can sign updates for any
# device that trusts root-ca.pem. Never ship root-ca.pem to devices in the
# field; make a real PKI with keys kept offline or in an HSM.
#
#   bundles/make-dev-pki.sh DIR
#
# DIR gets: root-ca.pem (the device keyring), root-ca.key, intermediate-ca.pem,
# intermediate-ca.key, signing.pem, signing.key. `didymos demo` makes the
# same files in-process.
set -eu
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
cd "$dir"
days=3650
org="didymos development (NOT FOR PRODUCTION)"

cat > ext.cnf <<'CNF'
[ca]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[signer]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key root-ca.key
openssl req -x509 -new -key root-ca.key -sha256 -days $days \
  -subj "/O=$org/CN=didymos development root CA" \
  -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out root-ca.pem

key intermediate-ca.key
openssl req -new -key intermediate-ca.key -subj "/O=$org/CN=didymos development intermediate CA" -out intermediate-ca.csr
openssl x509 -req -in intermediate-ca.csr -CA root-ca.pem -CAkey root-ca.key -CAcreateserial \
  -sha256 -days $days -extfile ext.cnf -extensions ca -out intermediate-ca.pem 2>/dev/null

key signing.key
openssl req -new -key signing.key -subj "/O=$org/CN=didymos development signer" -out signing.csr
openssl x509 -req -in signing.csr -CA intermediate-ca.pem -CAkey intermediate-ca.key -CAcreateserial \
  -sha256 -days $days -extfile ext.cnf -extensions signer -out signing.pem 2>/dev/null

rm -f ./*.csr ./*.srl ext.cnf
openssl verify -CAfile root-ca.pem -untrusted intermediate-ca.pem -purpose any signing.pem >/dev/null
echo "development PKI in $dir (NOT FOR PRODUCTION): keyring root-ca.pem, sign with signing.pem/signing.key + intermediate-ca.pem"
