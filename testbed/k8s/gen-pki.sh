#!/usr/bin/env bash
# gen-pki.sh DIR APISERVER_URL: certificates, service-account keys and an admin kubeconfig for the
# test cluster (called by testbed/parts/k8s.sh up). ECDSA P-256 keys: quick to make, and every
# component accepts them. Everything is for 127.0.0.1 only and lives as long as the test bed.
set -euo pipefail
dir=$1 server=$2
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# cert NAME SUBJECT EXTENSIONS: a key and a certificate signed by the test CA.
cert() {
  local name=$1 subj=$2 ext=$3
  key "$name.key"
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  printf '%b\n' "$ext" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

key ca.key
openssl req -x509 -new -key ca.key -subj "/CN=safe-updater-testbed-ca" -days 3650 -sha256 \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
  -out ca.crt 2>/dev/null

cert apiserver "/CN=kube-apiserver" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
# cluster-admin through the system:masters group.
cert admin "/O=system:masters/CN=testbed-admin" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"

# Service-account token signing key pair (kube-apiserver signs, kube-controller-manager too).
key sa.key
openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null

b64() { base64 -w0 <"$1"; }
cat >kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: $server
    certificate-authority-data: $(b64 ca.crt)
users:
- name: testbed-admin
  user:
    client-certificate-data: $(b64 admin.crt)
    client-key-data: $(b64 admin.key)
contexts:
- name: testbed
  context:
    cluster: testbed
    user: testbed-admin
    namespace: default
current-context: testbed
EOF
