#!/bin/sh
# A federated round over a real Mosquitto broker on loopback, started and
# stopped here: the server subscribes, two devices publish their updates,
# and in between a damaged message, an update for another round and a
# device's second update arrive and must be left out. The model the server
# writes must equal, byte for byte, the aggregation of the same two update
# files (the server averages in client order, whatever order they came in).
# The server publishes the new model (retained) and a device of the next
# round trains from it. Then: a round that times out with nothing, and an
# unreachable broker.
# usage: fed_mqtt_test.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1 build=$2
tlm=$build/tritlm
data=${TLM_DATA_DIR:-$src/../shared/data}
. "$src/tests/lib.sh"
broker_bin=$(command -v mosquitto || true)
[ -z "$broker_bin" ] && [ -x /usr/sbin/mosquitto ] && broker_bin=/usr/sbin/mosquitto
[ -n "$broker_bin" ] || tlm_missing "mosquitto not installed"
tlm_need_tools mosquitto_pub
tlm_need_stories "$data"
tmp=$(mktemp -d)
bpid=""
cleanup() { [ -n "$bpid" ] && kill "$bpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
"$tlm" import llama2c "$data/llama2c/stories260K.bin" "$data/llama2c/tok512.bin" -o "$tmp/g.tlm" 2>/dev/null
head -c 200000 "$data/tinystories/train.txt" >"$tmp/a.txt"
tail -c 200000 "$data/tinystories/train.txt" >"$tmp/b.txt"
# a broker on a free loopback port
port=""
for p in $(seq $((20000 + $$ % 20000)) $((20000 + $$ % 20000 + 20))); do
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$p" >"$tmp/m.conf"
    "$broker_bin" -c "$tmp/m.conf" >"$tmp/broker.log" 2>&1 &
    bpid=$!
    sleep 0.5
    if kill -0 "$bpid" 2>/dev/null && mosquitto_pub -h 127.0.0.1 -p "$p" -t probe -m x 2>/dev/null; then port=$p; break; fi
    kill "$bpid" 2>/dev/null || true
    bpid=""
done
[ -n "$port" ] || { echo "FAIL: no broker would start"; cat "$tmp/broker.log"; exit 1; }
b=127.0.0.1:$port
fail=0
# waits until the server whose stderr is $1 subscribed (30 s at most)
wait_listening() {
    i=0
    until grep -q listening "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -gt 300 ] && { echo "FAIL: the server never listened"; cat "$1"; exit 1; }
        sleep 0.1
    done
}
"$tlm" fed aggregate -m "$tmp/g.tlm" -o "$tmp/mq.tlm" --broker $b --expect 2 --round 3 --timeout 120 --json --publish-model \
    >"$tmp/agg.json" 2>"$tmp/agg.err" &
apid=$!
wait_listening "$tmp/agg.err"
common="--steps 2 --batch 2 --ctx 64 --threads 1 --encode fp32"
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 2 --round 3 -o "$tmp/u2.tlmu" --broker $b 2>/dev/null
head -c 3000 "$tmp/u2.tlmu" >"$tmp/junk"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t tritlm/round/3/update -f "$tmp/junk"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t tritlm/round/3/update -f "$tmp/u2.tlmu" # client 2 again
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/b.txt" $common --client 5 --round 4 -o "$tmp/u5.tlmu" 2>/dev/null
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t tritlm/round/3/update -f "$tmp/u5.tlmu" # made for round 4
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/b.txt" $common --client 1 --round 3 -o "$tmp/u1.tlmu" --broker $b 2>/dev/null
st=0
wait $apid || st=$?
"$tlm" fed aggregate -m "$tmp/g.tlm" -o "$tmp/files.tlm" "$tmp/u1.tlmu" "$tmp/u2.tlmu" 2>/dev/null
json=$(cat "$tmp/agg.json")
if [ $st != 0 ] || ! printf '%s' "$json" | grep -q '"accepted":2' || ! cmp -s "$tmp/mq.tlm" "$tmp/files.tlm"; then
    echo "FAIL: MQTT round: exit $st, $json"; cat "$tmp/agg.err"; fail=1
fi
for why in "arrived" "already sent" "answers round 4"; do
    if ! grep -q "$why" "$tmp/agg.err"; then echo "FAIL: no message '$why' for a bad update"; cat "$tmp/agg.err"; fail=1; fi
done
[ $fail = 0 ] && echo "ok MQTT round: 2 updates averaged, the same model as from the files; left out: $(grep -c 'left out: ' "$tmp/agg.err")"
# the next round: a device takes the new global model from the broker
# (retained), and its update is one of that model
st=0
"$tlm" fed update --model-from-broker --broker $b --data "$tmp/a.txt" $common --client 7 --round 4 -o "$tmp/u7.tlmu" \
    2>"$tmp/u7.err" || st=$?
if [ $st != 0 ] || ! "$tlm" fed aggregate -m "$tmp/mq.tlm" -o "$tmp/r4.tlm" "$tmp/u7.tlmu" 2>"$tmp/r4.err" ||
    "$tlm" fed aggregate -m "$tmp/g.tlm" -o "$tmp/r4b.tlm" "$tmp/u7.tlmu" 2>/dev/null; then
    echo "FAIL: an update from the broker's model: exit $st"; cat "$tmp/u7.err" "$tmp/r4.err"; fail=1
else
    echo "ok model from the broker: the update applies to the new global model, not the old one"
fi
# a protected round: sealed, signed updates; differential privacy; a signed model
"$tlm" fed keygen -o "$tmp/server" 2>/dev/null
for d in d1 d2 d3; do "$tlm" fed keygen -o "$tmp/$d" 2>/dev/null; done
printf '# enrolled devices\n1 %s\n2 %s\n' "$(cat "$tmp/d1.pub")" "$(cat "$tmp/d2.pub")" >"$tmp/devices.txt"
"$tlm" fed aggregate -m "$tmp/g.tlm" -o "$tmp/p.tlm" --broker $b --expect 2 --round 5 --timeout 120 --topic sec \
    --key "$tmp/server.key" --devices "$tmp/devices.txt" --dp-noise 1 --clip 1 --dp-clients 50 --ledger "$tmp/ledger.json" \
    --publish-model --json >"$tmp/p.json" 2>"$tmp/p.err" &
apid=$!
wait_listening "$tmp/p.err"
sec="--key $tmp/d1.key --server-key $tmp/server.pub"
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 1 --round 5 --topic sec --broker $b \
    --key "$tmp/d3.key" --server-key "$tmp/server.pub" 2>/dev/null # d3 is not enrolled
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 1 --round 5 --topic sec --broker $b 2>/dev/null # not sealed
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 1 --round 5 --topic sec --broker $b $sec 2>/dev/null
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/b.txt" $common --client 2 --round 5 --topic sec --broker $b \
    --key "$tmp/d2.key" --server-key "$tmp/server.pub" 2>/dev/null
st=0
wait $apid || st=$?
json=$(cat "$tmp/p.json")
if [ $st != 0 ] || ! printf '%s' "$json" | grep -q '"accepted":2' || ! printf '%s' "$json" | grep -q '"epsilon_total"' ||
    ! grep -q '"rounds": 1' "$tmp/ledger.json" || ! grep -q "not enrolled" "$tmp/p.err" || ! grep -q "not a sealed update" "$tmp/p.err"; then
    echo "FAIL: protected round: exit $st, $json"; cat "$tmp/p.err" "$tmp/ledger.json"; fail=1
else
    echo "ok protected round: 2 sealed updates, 2 left out, $(grep 'differential privacy' "$tmp/p.err" | sed 's/.*privacy: //')"
fi
# the next round's device takes the signed model and its round from the broker
st=0
"$tlm" fed update --model-from-broker --broker $b --topic sec --data "$tmp/a.txt" $common --client 1 $sec \
    -o "$tmp/s1.tlmu" 2>"$tmp/s1.err" || st=$?
if [ $st != 0 ] || ! grep -q "round 6" "$tmp/s1.err" ||
    ! "$tlm" fed aggregate -m "$tmp/p.tlm" -o "$tmp/p6.tlm" --key "$tmp/server.key" --devices "$tmp/devices.txt" "$tmp/s1.tlmu" 2>/dev/null; then
    echo "FAIL: the signed model from the broker: exit $st"; cat "$tmp/s1.err"; fail=1
else
    echo "ok signed model: verified, trained for round 6, its sealed update accepted"
fi
# an unsigned model where a signed one is expected: refused before training
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -r -t forged/global -f "$tmp/g.tlm"
st=0
"$tlm" fed update --model-from-broker --broker $b --topic forged --data "$tmp/a.txt" $common --client 1 $sec \
    -o "$tmp/f1.tlmu" 2>"$tmp/f1.err" || st=$?
if [ $st != 1 ] || [ -e "$tmp/f1.tlmu" ] || ! grep -q "not a signed model" "$tmp/f1.err" || grep -q "^train:" "$tmp/f1.err"; then
    echo "FAIL: an unsigned model was not refused: exit $st"; cat "$tmp/f1.err"; fail=1
else
    echo "ok unsigned model refused: $(tail -n 1 "$tmp/f1.err")"
fi
# secure aggregation over the broker with a device that never reports: the
# server waits for the roster's shares, names the missing device in a signed
# request, and reads the survivors' sum once both revealed
printf '1 %s\n2 %s\n3 %s\n' "$(cat "$tmp/d1.pub")" "$(cat "$tmp/d2.pub")" "$(cat "$tmp/d3.pub")" >"$tmp/roster3.txt"
"$tlm" fed aggregate -m "$tmp/g.tlm" -o "$tmp/sa.tlm" --broker $b --round 8 --timeout 10 --topic sa \
    --key "$tmp/server.key" --devices "$tmp/roster3.txt" --secure-agg --clip 1 --dp-noise 1 --tensors norms \
    --json >"$tmp/sa.json" 2>"$tmp/sa.err" &
apid=$!
wait_listening "$tmp/sa.err"
share="--secure-agg --devices $tmp/roster3.txt --update-clip 1 --dp-noise 1 --tensors norms --round 8 --topic sa --broker $b"
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 2 --key "$tmp/d2.key" --server-key "$tmp/server.pub" \
    $share --reveal-timeout 60 2>"$tmp/sa2.err" &
d2pid=$!
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/b.txt" $common --client 1 $sec $share --reveal-timeout 60 2>"$tmp/sa1.err" &
d1pid=$!
st=0 st1=0 st2=0
wait $apid || st=$?
wait $d1pid || st1=$?
wait $d2pid || st2=$?
if [ $st != 0 ] || [ $st1 != 0 ] || [ $st2 != 0 ] || ! grep -q '"accepted":2' "$tmp/sa.json" ||
    ! grep -q "dropped: 3" "$tmp/sa.err" || ! grep -q "only the sum of the 2 shares" "$tmp/sa.err" ||
    ! grep -q "reveal published" "$tmp/sa1.err" || ! grep -q '"noise_added_by":"devices"' "$tmp/sa.json"; then
    echo "FAIL: secure aggregation over MQTT: exit $st (devices $st1 $st2)"; cat "$tmp/sa.err" "$tmp/sa.json" "$tmp/sa1.err"; fail=1
else
    echo "ok secure aggregation over MQTT, device 3 never reporting: $(grep 'differential privacy' "$tmp/sa.err" | sed 's/.*privacy: //')"
fi
# nobody sends: the round closes at its timeout and nothing is written
st=0
"$tlm" fed aggregate -m "$tmp/g.tlm" -o "$tmp/none.tlm" --broker $b --expect 1 --round 9 --timeout 1.5 2>"$tmp/none.err" || st=$?
if [ $st != 1 ] || [ -e "$tmp/none.tlm" ] || ! grep -q "0 of 1" "$tmp/none.err"; then
    echo "FAIL: an empty round: exit $st"; cat "$tmp/none.err"; fail=1
else
    echo "ok empty round: $(tail -n 1 "$tmp/none.err")"
fi
# TLS and a login: a broker that takes only TLS connections (its certificate
# from a CA made here, for localhost) from users with a password
if ! command -v openssl >/dev/null 2>&1 || ! command -v mosquitto_passwd >/dev/null 2>&1; then
    if tlm_required; then echo "FAIL: openssl or mosquitto_passwd not installed"; exit 1; fi
    echo "SKIP: TLS round (openssl or mosquitto_passwd not installed)"
else
    t=$tmp/tls
    mkdir "$t"
    ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    openssl req -x509 $ec -keyout "$t/ca.key" -out "$t/ca.crt" -days 2 -subj "/CN=tritlm test CA" 2>/dev/null
    openssl req -x509 $ec -keyout "$t/other.key" -out "$t/other.crt" -days 2 -subj "/CN=another CA" 2>/dev/null
    openssl req $ec -keyout "$t/srv.key" -out "$t/srv.csr" -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$t/ext"
    openssl x509 -req -in "$t/srv.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial -out "$t/srv.crt" -days 2 \
        -extfile "$t/ext" 2>/dev/null
    openssl req $ec -keyout "$t/dev1.key" -out "$t/dev1.csr" -subj "/CN=dev1" 2>/dev/null
    openssl x509 -req -in "$t/dev1.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial -out "$t/dev1.crt" -days 2 2>/dev/null
    touch "$t/users"
    chmod 600 "$t/users"
    mosquitto_passwd -b "$t/users" dev1 dev1-pass
    mosquitto_passwd -b "$t/users" server server-pass
    (umask 077 && printf 'dev1-pass\n' >"$t/dev1.pass" && printf 'server-pass\n' >"$t/server.pass" &&
        printf 'wrong\n' >"$t/bad.pass")
    # what each user may do, as 'fed acl' writes it for the roster (users server, dev1, dev2):
    # a device sends updates and reveals and reads the requests and the global model, never
    # another device's update
    "$tlm" fed acl --devices "$tmp/devices.txt" --topic tls --device-user dev -o "$t/acl" 2>/dev/null
    grep -q '^user dev2$' "$t/acl" || { echo "FAIL: fed acl left out device 2"; cat "$t/acl"; fail=1; }
    printf 'dev1-pass\n' >"$t/open.pass"
    chmod 644 "$t/open.pass"
    tport="" tpid=""
    for p in $(seq $((port + 1)) 2 $((port + 40))); do
        # a second listener, one port up, also asks for a client certificate
        printf 'allow_anonymous false\npassword_file %s\nacl_file %s\nuser %s\n' "$t/users" "$t/acl" "$(id -un)" >"$t/m.conf"
        for l in "$p" "$((p + 1))"; do
            printf 'listener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n' "$l" "$t/ca.crt" "$t/srv.crt" "$t/srv.key" >>"$t/m.conf"
        done
        echo "require_certificate true" >>"$t/m.conf"
        "$broker_bin" -c "$t/m.conf" >"$t/broker.log" 2>&1 &
        tpid=$!
        sleep 0.5
        if kill -0 "$tpid" 2>/dev/null && grep -q running "$t/broker.log"; then tport=$p; break; fi
        kill "$tpid" 2>/dev/null || true
        tpid=""
    done
    [ -n "$tport" ] || { echo "FAIL: no TLS broker would start"; cat "$t/broker.log"; exit 1; }
    tb="--broker localhost:$tport --tls-ca $t/ca.crt"
    "$tlm" fed aggregate -m "$tmp/g.tlm" -o "$t/tls.tlm" $tb --username server --password-file "$t/server.pass" \
        --expect 1 --round 10 --topic tls --timeout 60 --json >"$t/agg.json" 2>"$t/agg.err" &
    apid=$!
    wait_listening "$t/agg.err"
    # refused before any training: no CA, a wrong password, another CA, a password others can read
    for bad in "--broker localhost:$tport|give its CA with --tls-ca" \
        "$tb --username dev1 --password-file $t/bad.pass|not authorised" \
        "--broker localhost:$tport --tls-ca $t/other.crt --username dev1 --password-file $t/dev1.pass|TLS handshake failed" \
        "$tb --username dev1 --password-file $t/open.pass|must be private" \
        "--broker localhost:$((tport + 1)) --tls-ca $t/ca.crt --username dev1 --password-file $t/dev1.pass|give --tls-cert and --tls-key"; do
        opts=${bad%%|*} want=${bad#*|}
        st=0
        "$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 1 --round 10 --topic tls $opts \
            2>"$t/bad.err" || st=$?
        if [ $st != 1 ] || ! grep -q "$want" "$t/bad.err" || grep -q "^train:" "$t/bad.err"; then
            echo "FAIL: TLS broker, '$opts': exit $st, expected '$want'"; cat "$t/bad.err"; fail=1
        else
            echo "ok TLS broker refuses '$want': $(tail -n 1 "$t/bad.err")"
        fi
    done
    st=0
    "$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 1 --round 10 --topic tls $tb \
        --username dev1 --password-file "$t/dev1.pass" -o "$t/u1.tlmu" 2>"$t/u1.err" || st=$?
    sta=0
    wait $apid || sta=$?
    "$tlm" fed aggregate -m "$tmp/g.tlm" -o "$t/files.tlm" "$t/u1.tlmu" 2>/dev/null
    if [ $st != 0 ] || [ $sta != 0 ] || ! grep -q '"accepted":1' "$t/agg.json" || ! cmp -s "$t/tls.tlm" "$t/files.tlm"; then
        echo "FAIL: a round over TLS: device exit $st, server exit $sta"; cat "$t/u1.err" "$t/agg.err"; fail=1
    else
        echo "ok a round over TLS with logins: the update arrived and the model equals the files' aggregation"
    fi
    # the broker's access list: a device that listens to the updates gets none of them,
    # while the server, listening at the same time, gets the update sent
    "$tlm" fed aggregate -m "$tmp/g.tlm" -o "$t/spy.tlm" $tb --username dev1 --password-file "$t/dev1.pass" \
        --expect 1 --round 12 --topic tls --timeout 8 2>"$t/spy.err" &
    spid=$!
    "$tlm" fed aggregate -m "$tmp/g.tlm" -o "$t/r12.tlm" $tb --username server --password-file "$t/server.pass" \
        --expect 1 --round 12 --topic tls --timeout 60 2>"$t/r12.err" &
    apid=$!
    wait_listening "$t/spy.err"
    wait_listening "$t/r12.err"
    "$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 1 --round 12 --topic tls $tb \
        --username dev1 --password-file "$t/dev1.pass" 2>/dev/null
    st=0 sta=0
    wait $spid || st=$?
    wait $apid || sta=$?
    if [ $st != 1 ] || [ -e "$t/spy.tlm" ] || ! grep -q "0 of 1" "$t/spy.err" || [ $sta != 0 ] || [ ! -e "$t/r12.tlm" ]; then
        echo "FAIL: the access list: device listening exit $st, server exit $sta"; cat "$t/spy.err" "$t/r12.err"; fail=1
    else
        echo "ok the access list: the server got the update, a device listening beside it did not"
    fi
    # the listener that asks for a client certificate takes one signed by the CA
    st=0
    "$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" $common --client 1 --round 11 --topic tls \
        --broker "localhost:$((tport + 1))" --tls-ca "$t/ca.crt" --tls-cert "$t/dev1.crt" --tls-key "$t/dev1.key" \
        --username dev1 --password-file "$t/dev1.pass" 2>"$t/c1.err" || st=$?
    if [ $st != 0 ] || ! grep -q "published to tls/round/11/update" "$t/c1.err"; then
        echo "FAIL: a client certificate: exit $st"; cat "$t/c1.err"; fail=1
    else
        echo "ok a client certificate: published where the broker asks for one (refused above without it)"
    fi
    kill "$tpid" 2>/dev/null || true
fi
# no broker there
kill "$bpid"
wait "$bpid" 2>/dev/null || true
bpid=""
st=0
"$tlm" fed update -m "$tmp/g.tlm" --data "$tmp/a.txt" --steps 1 --batch 2 --ctx 32 --broker $b 2>"$tmp/nob.err" || st=$?
if [ $st != 1 ] || ! grep -q "cannot reach the MQTT broker" "$tmp/nob.err" || grep -q "^train:" "$tmp/nob.err"; then echo "FAIL: no broker: exit $st"; cat "$tmp/nob.err"; fail=1;
else echo "ok no broker: $(cat "$tmp/nob.err")"; fi
exit $fail
