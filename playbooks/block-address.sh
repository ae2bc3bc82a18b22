#!/usr/bin/env bash
# ---
# name: block-address
# description: Drop incoming traffic from an address or network, expiring automatically (nftables, else iptables with ipset).
# risk: change
# timeout: 30
# params:
#   address:
#     type: cidr
#     required: true
#     description: The source address (or network, /16 or narrower for IPv4, /48 for IPv6) to block.
#   duration:
#     type: duration
#     default: 1h
#     min: 1
#     max: 2592000
#     description: How long the block lasts; the kernel removes it afterwards by itself.
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# rollback: bash "$PLAYBOOK_PATH" rollback
# ---
# Expiry is the kernel's (nftables set timeouts, or ipset timeouts), so a block lifts on time
# even if the agent or the hub is gone.
set -euo pipefail
mode="${1:-run}"

addr="$PARAM_ADDRESS"        # normalised network, e.g. 203.0.113.7/32
prefix="${addr##*/}"
case "$addr" in
  *:*) family=6 ;;
  *) family=4 ;;
esac
# nftables reports single addresses without their /32 or /128
elem="$addr"
if { [ "$family" = 4 ] && [ "$prefix" = 32 ]; } || { [ "$family" = 6 ] && [ "$prefix" = 128 ]; }; then
  elem="${addr%/*}"
fi
case "$addr" in
  127.*|::1/128|0.0.0.0/*|::/*)
    echo "refusing to block $addr: loopback or unspecified" >&2; exit 4 ;;
esac
if { [ "$family" = 4 ] && [ "$prefix" -lt 16 ]; } || { [ "$family" = 6 ] && [ "$prefix" -lt 48 ]; }; then
  echo "refusing to block $addr: network too wide" >&2
  exit 4
fi

nft_setup() {
  nft list table inet homelab >/dev/null 2>&1 && return 0
  nft -f - <<'NFT'
table inet homelab {
  set block4 { type ipv4_addr; flags interval, timeout; }
  set block6 { type ipv6_addr; flags interval, timeout; }
  chain input {
    type filter hook input priority -10; policy accept;
    ip saddr @block4 counter drop
    ip6 saddr @block6 counter drop
  }
}
NFT
}

nft_has() {
  nft get element inet homelab "block$family" "{ $elem }" >/dev/null 2>&1
}

ipt_setup() {
  local ipt=iptables set="homelab_block$family" fam=inet
  if [ "$family" = 6 ]; then ipt=ip6tables; fam=inet6; fi
  ipset create "$set" hash:net family "$fam" timeout 0 -exist
  "$ipt" -C INPUT -m set --match-set "$set" src -j DROP 2>/dev/null \
    || "$ipt" -I INPUT -m set --match-set "$set" src -j DROP
}

if command -v nft >/dev/null; then
  case "$mode" in
    check)
      if nft_has; then echo "$addr is blocked now"; else echo "$addr is not blocked"; fi
      echo "would add $addr to inet homelab block$family for ${PARAM_DURATION}s"
      ;;
    verify) nft_has ;;
    rollback)
      if nft_has; then nft delete element inet homelab "block$family" "{ $elem }"; fi
      echo "unblocked $addr"
      ;;
    run)
      nft_setup
      if nft_has; then nft delete element inet homelab "block$family" "{ $elem }"; fi
      nft add element inet homelab "block$family" "{ $elem timeout ${PARAM_DURATION}s }"
      echo "blocked $addr for ${PARAM_DURATION}s (nftables, inet homelab block$family)"
      ;;
    *) echo "unknown mode: $mode" >&2; exit 2 ;;
  esac
elif command -v iptables >/dev/null && command -v ipset >/dev/null; then
  set="homelab_block$family"
  case "$mode" in
    check) echo "would add $addr to ipset $set for ${PARAM_DURATION}s" ;;
    verify) ipset test "$set" "$addr" ;;
    rollback) ipset del "$set" "$addr" -exist; echo "unblocked $addr" ;;
    run)
      ipt_setup
      ipset add "$set" "$addr" timeout "$PARAM_DURATION" -exist
      echo "blocked $addr for ${PARAM_DURATION}s (iptables + ipset $set)"
      ;;
    *) echo "unknown mode: $mode" >&2; exit 2 ;;
  esac
else
  echo "neither nftables nor iptables with ipset is installed: cannot block with expiry" >&2
  exit 3
fi
