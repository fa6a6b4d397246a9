#!/usr/bin/env bash
# Chaos soak (issue 17 item 10): two real agents, handovers, kills, sink and API server
# faults, a full state fs; proves 0 lost, bounded duplicates, flat memory. Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo xtask soak --minutes "${SOAK_MINUTES:-3}"
