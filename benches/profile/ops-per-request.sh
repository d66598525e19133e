#!/bin/bash
# Kernel operations and CPU per request of relay's plain proxy (1 worker, pinned to CPU 1 as
# SCHED_FIFO 1; stub upstream + load generator on CPU 0; 16 keep-alive connections, closed
# loop, 1 KiB events). Needs root and a release build (`cargo build --release -p relay -p relay-lab`).
#
#   benches/profile/ops-per-request.sh <io_uring|epoll> <none|perf|strace|callgrind> [secs] 
#   EXTRA='keepalive_read_window_ms = 0' benches/profile/ops-per-request.sh io_uring none 5
#
# none: relay CPU µs per request (utime+stime from /proc over the loadgen run / answers) and
# TPS. perf: plus io_uring submissions by opcode and syscalls by number per request
# (tracepoints; this KVM guest has no hardware counters). strace: syscall counts (slows epoll
# a lot, io_uring little). callgrind: user-space instructions per request (after a 1 s warm-up).
# EXTRA: lines added to [server].
set -e
engine=$1; tool=${2:-none}; secs=${3:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
R=$root/target/release
d=$(mktemp -d /tmp/relay-ops.XXXX)
taskset -c 0 $R/stub-upstream --listen 127.0.0.1:0 > $d/stub.out 2>$d/stub.err &
stub=$!
for i in $(seq 1 50); do [ -s $d/stub.out ] && break; sleep 0.1; done
up=$(head -1 $d/stub.out | grep -oE '127.0.0.1:[0-9]+')
cat > $d/relay.toml <<TOML
[server]
$EXTRA
listen = "127.0.0.1:0"
workers = 1
io_engine = "$engine"
shutdown_grace_ms = 1000

[admin]
listen = "127.0.0.1:0"

[[upstreams]]
name = "tracking"
nodes = ["$up"]

[[routes]]
name = "app-logs"
path = "/v1/logs"
methods = ["POST"]
upstream = "tracking"
TOML
run="$R/relay run --config $d/relay.toml --ready-file $d/ready.json"
case $tool in
  strace) strace -f -c -o $d/strace.txt $run > $d/relay.log 2>&1 & ;;
  callgrind) valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file=$d/cg.out $run > $d/relay.log 2>&1 & ;;
  *) taskset -c 1 chrt -f 1 $run > $d/relay.log 2>&1 & ;;
esac
rp=$!
for i in $(seq 1 300); do [ -s $d/ready.json ] && break; sleep 0.2; done
field() { python3 -c "import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }
addr=$(field $d/ready.json listen); pid=$(field $d/ready.json pid)
lg() { taskset -c 0 $R/relay-loadgen --target $addr --path /v1/logs --connections 16 --warmup 0s --body-size 1024 "$@" > /dev/null 2>&1; }
[ $tool != strace ] && lg --duration 1s
[ $tool = callgrind ] && callgrind_control -i on $rp > /dev/null
if [ $tool = perf ]; then
  perf record -q -e io_uring:io_uring_submit_req -e raw_syscalls:sys_enter -o $d/perf.data -p $pid -- sleep $((secs+1)) > /dev/null 2>&1 &
  pp=$!; sleep 0.5
fi
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }
t0=$(cpu)
lg --duration ${secs}s --json $d/lg.json
t1=$(cpu)
[ $tool = callgrind ] && callgrind_control -i off $rp > /dev/null
kill -TERM $pid; wait $rp 2>/dev/null || true
kill $stub 2>/dev/null; wait $stub 2>/dev/null || true
n=$(field $d/lg.json answered_total)
hz=$(getconf CLK_TCK)
echo "engine=$engine extra='$EXTRA' answered=$n tps=$(python3 -c "print(round($(field $d/lg.json achieved_tps)))") relay_cpu_us_per_req=$(python3 -c "print(round(($t1-$t0)*1e6/$hz/$n,2))") dir=$d"
if [ $tool = perf ]; then
  wait $pp 2>/dev/null || true
  perf script -i $d/perf.data 2>/dev/null > $d/perf.txt
  echo "io_uring submissions per request:"
  grep io_uring_submit_req $d/perf.txt | grep -oE 'opcode [A-Z_]+' | sort | uniq -c | awk -v n=$n '$1/n >= 0.001 {printf "  %s: %.3f\n", $3, $1/n}'
  echo "syscalls per request (x86_64 numbers: 426 io_uring_enter, 45 recvfrom, 44 sendto, 7 poll, 232 epoll_wait):"
  grep sys_enter $d/perf.txt | grep -oE 'NR [0-9]+' | sort | uniq -c | sort -rn | awk -v n=$n '$1/n >= 0.001 {printf "  NR %s: %.3f\n", $3, $1/n}'
fi
[ $tool = strace ] && head -15 $d/strace.txt
if [ $tool = callgrind ]; then
  ir=$(callgrind_annotate $d/cg.out 2>/dev/null | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",","",$1); print $1}')
  echo "user-space instructions per request: $(python3 -c "print(round($ir/$n))")"
fi
