#!/bin/sh
# docker compose's redis-cluster (the cluster profile), once per `up`: the arguments are the
# six nodes (host:port), every one answering already. When none holds a cluster yet they are
# joined into three masters with a replica each; when all do (an earlier `up`), each is told
# the others' addresses again, as containers may have come back on new ones; a mix is refused.
# Then it waits until every node says cluster_state:ok and every master has a replica online.
set -eu

# redis-cli --cluster create and CLUSTER MEET want addresses, not names.
addrs=""
for node in "$@"; do
    host=${node%:*}
    ip=$(getent hosts "$host" | awk '{ print $1; exit }')
    if [ -z "$ip" ]; then
        echo "redis-cluster: cannot resolve $host" >&2
        exit 1
    fi
    addrs="${addrs:+$addrs }$ip:${node##*:}"
done

ask() {  # ask ADDR COMMAND...: a node's answer, without carriage returns
    addr=$1
    shift
    redis-cli -h "${addr%:*}" -p "${addr##*:}" "$@" | tr -d '\r'
}

empty=0
held=0
for addr in $addrs; do
    info=$(ask "$addr" cluster info)
    if echo "$info" | grep -qx cluster_known_nodes:1 && echo "$info" | grep -qx cluster_slots_assigned:0; then
        empty=$((empty + 1))
    else
        held=$((held + 1))
    fi
done

if [ "$held" -eq 0 ]; then
    # shellcheck disable=SC2086  # one argument per node
    redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes
elif [ "$empty" -eq 0 ]; then
    for addr in $addrs; do
        for other in $addrs; do
            [ "$other" = "$addr" ] || ask "$addr" cluster meet "${other%:*}" "${other##*:}" > /dev/null
        done
    done
else
    echo "redis-cluster: $held nodes hold a cluster and $empty none (a volume lost?);" \
        "start over with \`docker compose --env-file deploy/compose/cluster.env down -v\`" >&2
    exit 1
fi

whole() {
    for addr in $addrs; do
        ask "$addr" cluster info | grep -qx cluster_state:ok || return 1
        replication=$(ask "$addr" info replication)
        if echo "$replication" | grep -qx role:master; then
            echo "$replication" | grep -q '^slave0:.*state=online' || return 1
        else
            echo "$replication" | grep -qx master_link_status:up || return 1
        fi
    done
}

tries=0
until whole; do
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ]; then
        echo "redis-cluster: not whole after 60 s" >&2
        ask "${addrs%% *}" cluster nodes >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "redis-cluster: cluster_state:ok, three masters with a replica each"
