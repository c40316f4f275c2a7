#!/usr/bin/perl
# bench/report.pl META RESULTS: the markdown report of a bench run
# (docs/BENCHMARKS.md).  META holds key=value lines about the machine and
# the run; RESULTS one line of key=value pairs per measurement, as
# bench/run.sh writes them.  bench/notes.md, if present, is appended.

use strict;
use warnings;

use File::Basename qw(dirname);
use POSIX qw(strftime);

my ($meta_file, $results_file) = @ARGV;
die "usage: report.pl META RESULTS\n" unless $results_file;

my %meta;
open my $mf, '<', $meta_file or die "$meta_file: $!";
while (<$mf>) {
    chomp;
    my ($k, $v) = split /=/, $_, 2;
    $meta{$k} = $v if defined $v;
}
close $mf;

my @rows;
open my $rf, '<', $results_file or die "$results_file: $!";
while (<$rf>) {
    chomp;
    my %r = map { split /=/, $_, 2 } grep { /=/ } split / /;
    push @rows, \%r;
}
close $rf;

# the rows of (scenario, target, conc), in run order
sub rows_of {
    my ($scenario, $target, $conc) = @_;
    return grep { $_->{scenario} eq $scenario && $_->{target} eq $target
                  && $_->{conc} eq $conc } @rows;
}

# values of a metric for (scenario, target, conc), in run order
sub values_of {
    my ($scenario, $target, $conc, $key) = @_;
    return map { $_->{$key} }
           grep { defined $_->{$key} } rows_of($scenario, $target, $conc);
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub num {
    my ($v) = @_;
    return '–' unless defined $v;
    my $a = abs $v;
    my $s = $v == int($v) ? sprintf('%d', $v)
          : $a >= 1000 ? sprintf('%.0f', $v)
          : $a >= 100  ? sprintf('%.0f', $v)
          : $a >= 10   ? sprintf('%.1f', $v)
          :              sprintf('%.2f', $v);
    1 while $s =~ s/^(-?\d+)(\d{3})/$1,$2/;
    return $s;
}

# "median (min–max)"
sub cell {
    my @v = @_;
    return '–' unless @v;
    my @s = sort { $a <=> $b } @v;
    return num(median(@v)) if @v == 1;
    return num(median(@v)) . ' (' . num($s[0]) . '–' . num($s[-1]) . ')';
}

sub stat_cell {
    my ($scenario, $target, $conc, $key) = @_;
    return cell(values_of($scenario, $target, $conc, $key));
}

sub med {
    return median(values_of(@_));
}

# what the rest of the machine used in the windows, % of one CPU
sub other {
    my @v = map { $_->{other_cpu_pct} + ($_->{steal_pct} // 0) }
            grep { defined $_->{other_cpu_pct} } rows_of(@_);
    return @v ? cell(@v) . ' %' : '–';
}

# what the load used, % of one CPU: the client's, and the bench browser's
# for the bridge's targets
sub load {
    my ($scenario, $target, $conc) = @_;
    return stat_cell($scenario, $target, $conc, 'loadgen_cpu_pct') . ' %'
        unless $target =~ /^bridge/;
    return cell(map { $_->{browser_cpu_pct} + $_->{loadgen_cpu_pct} }
                rows_of($scenario, $target, $conc)) . ' %';
}

# the bridge's round trip less the bare WebSocket one, run by run (SUFFIX:
# '' or '-awake')
sub added {
    my ($suffix) = @_;
    my @w = values_of('rtt', "websocket$suffix", 1, 'rtt_p50_us');
    my @b = values_of('rtt', "bridge$suffix", 1, 'p50_us');
    return map { $b[$_] - $w[$_] } grep { defined $b[$_] } 0 .. $#w;
}

sub ratio {
    my ($a, $b) = @_;
    return '–' unless defined $a && defined $b && $b != 0;
    my $r = $a / $b;
    return sprintf($r >= 10 ? '%.0f×' : $r >= 1 ? '%.1f×' : '%.2f×', $r);
}

my @concs = do {
    my %seen;
    grep { !$seen{$_}++ } map { $_->{conc} }
        grep { $_->{scenario} =~ /^(nonstream|stream)$/ } @rows;
};
my @holds = do {
    my %seen;
    grep { !$seen{$_}++ } map { $_->{conc} }
        grep { $_->{scenario} eq 'hold' } @rows;
};
my $top_conc = (sort { $a <=> $b } @concs)[-1] // 64;
my $top_hold = (sort { $a <=> $b } @holds)[-1] // 10000;

my $date = strftime('%Y-%m-%d', gmtime);
my $out = '';

sub p { $out .= join('', @_) . "\n" }

# one row of the non-streamed or streamed table: the target's cells, its
# ratio to a baseline on $rmetric, the load's CPU and the other CPU
sub target_row {
    my ($scenario, $target, $c, $name, $cols, $rmetric, $base) = @_;
    p "| $c | $name | ",
      join(' | ', map { stat_cell($scenario, $target, $c, $_) } @$cols),
      " | ", ratio(med($scenario, $target, $c, $rmetric),
                   med($scenario, $base, $c, $rmetric)),
      " | ", load($scenario, $target, $c), " | ",
      other($scenario, $target, $c), " |";
}

p "# Benchmarks";
p "";
p "Written by `make bench` (`bench/run.sh`, report by `bench/report.pl`) on",
  " $date, at commit `$meta{commit}`; the suite took $meta{elapsed} s.",
  " Re-run it rather than editing this file.";
if ($meta{quick}) {
    p "";
    p "**Smoke mode** (`BENCH_QUICK=1`): tiny windows and one run; these",
      " figures only show that the suite works.";
}
p "";
p "## The machine";
p "";
p "| | |";
p "|---|---|";
p "| CPU | $meta{cpu} |";
p "| cores | $meta{cores} |";
p "| memory | $meta{memory} |";
p "| OS, kernel | $meta{os}, Linux $meta{kernel} |";
p "| nginx | $meta{nginx} (Debian's `/usr/sbin/nginx` with `load_module`), one worker |";
p "| libwebsockets | $meta{lws} |";
p "| compiler | gcc $meta{gcc}; chatbridge `-O2`, bench programs `-O2` |";
p "| placement | $meta{pinning} |";
p "| browsers reach the sidecar | ",
  ($meta{browser} eq 'direct'
   ? 'directly, on its unix socket'
   : 'through nginx (`proxy_pass` to the sidecar\'s unix socket), as with `make run`'),
  " |";
p "| descriptors | $meta{nofile} per process (the hard limit here) |";
p "";
p "## How it is measured";
p "";
p "```sh";
p "make bench                   # this report: $meta{runs} runs of each figure";
p "make bench-smoke             # seconds: bench/selftest.t, then build/bench/BENCHMARKS-smoke.md";
p "BENCH_RUNS=5 BENCH_BROWSER=direct bench/run.sh   # knobs: see bench/run.sh";
p "```";
p "";
p "- Real `nginx` + `ngx_http_chatbridge_module.so` + `chatbridge-sidecar`",
  " from `build/`, on loopback ports chosen at run time, from a temp folder;",
  " `access_log off` (the same for every target).";
p "- `build/bench/cb_load` (C, epoll) is the client: HTTP/1.1 keep-alive,",
  " closed loop, one request at a time per connection; a measured window of",
  " $meta{duration} s after $meta{warmup} s of warm-up. It parses chunked",
  " SSE and times each answer chunk as it arrives.";
p "- `build/bench/cb_browser` (C, epoll, its own WebSocket client) is the",
  " browser: protocol v1, hello kind `test`; it answers each task with the",
  " `[[chunks N]]` deltas the request asks for, one delta per stream per",
  " turn of its loop (streams round robin), then `done`.";
p "- Baselines, same run, same bytes: **nginx** answers the captured",
  " chatbridge answer with `return 200 '...'` (non-streamed) or serves the",
  " captured SSE answer as a file (streamed; GET); **direct** is",
  " `build/bench/cb_sse_server` (C, epoll): the same answers, one `write` per",
  " SSE event, streams round robin.";
p "- Server CPU: `se.sum_exec_runtime` of the nginx master and worker and",
  " the sidecar from `/proc/<pid>/sched` (utime + stime from",
  " `/proc/<pid>/stat` where the kernel lacks it), read by `cb_load` at both",
  " ends of the window, divided by the requests or answer chunks in it.";
p "- Each cell: median (min–max) over $meta{runs} runs. A ratio is the",
  " bridge's median over the baseline's median.";
my $again = grep { ($_->{tries} // 1) > 1 } @rows;
my $shared = grep { ($_->{other_cpu_pct} // 0) > 20 } @rows;
p "- A run during which other work used more than 20 % of a CPU is",
  " measured again, twice at most (not the held streams). In this report",
  " $again of ", scalar(@rows), " runs were measured again, and $shared",
  " still shared the machine.";
p "- *Other CPU*: what the rest of the machine used during the window, in",
  " % of one CPU: user and system time from `/proc/stat` (and time the",
  " hypervisor stole), less what the servers, the browser and the client",
  " used. Interrupt work is left out, as at high rates most of it is the",
  " kernel delivering the bench's own traffic. A few % is kernel threads;",
  " more means the run shared the machine with other work. Before the run",
  " the rest of the machine used $meta{idle_other} % of one CPU."
  if defined $meta{idle_other};
p "";

# --- targets

my %t;
$t{rps} = med('nonstream', 'bridge', $top_conc, 'rps');
$t{cpu_req} = med('nonstream', 'bridge', $top_conc, 'cpu_per_req_us');
$t{cpu_chunk} = med('stream', 'bridge', $top_conc, 'cpu_per_chunk_us');
$t{chunks} = med('stream', 'bridge', $top_conc, 'chunks_per_s');
$t{ttft} = med('stream', 'bridge', $top_conc, 'ttft_p99_us');
my @late = values_of('hold', 'bridge', $top_hold, 'late');
my @failed = values_of('hold', 'bridge', $top_hold, 'failed');
$t{late} = @late ? (sort { $b <=> $a } map { $late[$_] + $failed[$_] }
                    0 .. $#late)[0] : undef;
$t{mem} = med('hold', 'bridge', $top_hold, 'mem_per_stream_b');

my @ws = values_of('rtt', 'websocket', 1, 'rtt_p50_us');
my @br = values_of('rtt', 'bridge', 1, 'p50_us');
my @added = added('');
$t{added} = median(@added);

sub verdict {
    my ($v, $ok) = @_;
    return '–' unless defined $v;
    return $ok ? '**met**' : '**missed**';
}

p "## Targets";
p "";
p "On $meta{cores} cores. The Python bridge chatbridge replaces did about",
  " 1,100 req/s at c=64, 0.85–1.1 ms of server CPU per request, 62–88 µs",
  " per chunk, a 700 ms first-token p99 at c=64, and held 2,000 streams",
  " with half of them late.";
p "";
p "| metric | target | measured (median) | |";
p "|---|---|---|---|";
p "| non-stream req/s, c=$top_conc | ≥ 20,000 | ", num($t{rps}), " | ",
  verdict($t{rps}, defined $t{rps} && $t{rps} >= 20000), " |";
p "| server CPU per non-stream request (c=$top_conc) | ≤ 50 µs | ",
  num($t{cpu_req}), " µs | ",
  verdict($t{cpu_req}, defined $t{cpu_req} && $t{cpu_req} <= 50), " |";
p "| server CPU per streamed chunk (c=$top_conc) | ≤ 8 µs | ",
  num($t{cpu_chunk}), " µs | ",
  verdict($t{cpu_chunk}, defined $t{cpu_chunk} && $t{cpu_chunk} <= 8), " |";
p "| streamed chunks/s (c=$top_conc) | ≥ 150,000 | ", num($t{chunks}), " | ",
  verdict($t{chunks}, defined $t{chunks} && $t{chunks} >= 150000), " |";
p "| time to first token p99, c=$top_conc | ≤ 10 ms | ",
  defined $t{ttft} ? num($t{ttft} / 1000) . ' ms' : '–', " | ",
  verdict($t{ttft}, defined $t{ttft} && $t{ttft} <= 10000), " |";
p "| streams held, none late by >1 s | 10,000 | ",
  defined $t{late} ? num($top_hold) . " held, $t{late} late or failed"
                     . " (worst run)" : '–', " | ",
  verdict($t{late}, defined $t{late} && $t{late} == 0 && $top_hold >= 10000),
  " |";
my $floor = med('hold', 'nginx', $top_hold, 'mem_per_stream_b');
p "| memory per held stream ($top_hold held) | ≤ 10 KB | ",
  defined $t{mem} ? num($t{mem} / 1024) . ' KiB' : '–',
  defined $floor ? ' (nginx alone: ' . num($floor / 1024) . ' KiB)' : '',
  " | ",
  verdict($t{mem}, defined $t{mem} && $t{mem} <= 10240), " |";
my @added_awake = added('-awake');
p "| added round-trip latency over a bare WebSocket round trip | ≤ 100 µs p50 | ",
  defined $t{added} ? num($t{added}) . ' µs' : '–',
  @added_awake ? ' (vCPUs kept awake: ' . num(median(@added_awake))
                 . ' µs)' : '',
  " | ",
  verdict($t{added}, defined $t{added} && $t{added} <= 100), " |";
p "";

# --- non-streamed

if (grep { $_->{scenario} eq 'nonstream' } @rows) {
    p "## Non-streamed answers";
    p "";
    p "`POST /v1/chat/completions` (stream false); the browser answers with",
      " one delta and done; the client gets one `chat.completion` JSON.";
    p "";
    p "| c | server | req/s | p50 µs | p99 µs | server CPU µs/req | req/s vs nginx | load CPU (browser + client) | other CPU |";
    p "|---|---|---|---|---|---|---|---|---|";
    for my $c (@concs) {
        for my $target (qw(bridge nginx direct)) {
            next unless values_of('nonstream', $target, $c, 'rps');
            my $name = { bridge => '**chatbridge**',
                         nginx => 'nginx `return 200`',
                         direct => 'direct server' }->{$target};
            target_row('nonstream', $target, $c, $name,
                       [qw(rps p50_us p99_us cpu_per_req_us)], 'rps',
                       'nginx');
        }
    }
    p "";
}

# --- streamed

if (grep { $_->{scenario} eq 'stream' } @rows) {
    p "## Streamed answers of 200 chunks";
    p "";
    p "`POST /v1/chat/completions` (stream true); the browser sends 200",
      " deltas as fast as its loop turns, with at most 256 frames in flight",
      " per WebSocket (it pings every 64 frames and waits for the pongs);",
      " the client counts the answer chunks (`{\"content\":\"`) and times",
      " the first. The row *browser writing without bound* is the same",
      " with `cb_browser --window 0`: the browser then fills the socket",
      " buffers between itself and the sidecar (hundreds of KB), and every",
      " new answer's first token waits behind them. The direct server",
      " writes each event on its own, as a trivial server does; chatbridge",
      " sends whatever records wait for a stream in one write, so under",
      " load it needs fewer system calls per chunk than that baseline; the",
      " static file shows what the bytes alone cost.";
    p "";
    p "| c | server | TTFT p50 µs | TTFT p99 µs | chunks/s | total p50 ms | server CPU µs/chunk | chunks/s vs direct | load CPU (browser + client) | other CPU |";
    p "|---|---|---|---|---|---|---|---|---|---|";
    for my $c (@concs) {
        for my $target (qw(bridge bridge-flood direct nginx)) {
            next unless values_of('stream', $target, $c, 'chunks_per_s');
            my $name = { bridge => '**chatbridge**',
                         'bridge-flood' => 'chatbridge, browser writing '
                                           . 'without bound',
                         nginx => 'nginx, static file',
                         direct => 'direct server' }->{$target};
            target_row('stream', $target, $c, $name,
                       [qw(ttft_p50_us ttft_p99_us chunks_per_s total_p50_ms
                           cpu_per_chunk_us)], 'chunks_per_s', 'direct');
        }
    }
    p "";
}

# --- held

if (@holds) {
    p "## Held streams";
    p "";
    p "Every client connection sends one streamed request at once (ramped at",
      " 20,000 connections/s); the browser answers each with 22 deltas",
      " $meta{hold_gap} ms apart (about ", $meta{hold_ms} / 1000,
      " s, on each stream's own clock), over $meta{hold_conns} WebSocket",
      " connections. Late: finished more than 1 s after the ",
      $meta{hold_ms} / 1000, " s it should take. Memory: resident private",
      " memory (RssAnon) of the nginx worker and the sidecar plus the pages",
      " of the shared segment (the memfd's blocks), at the peak during the",
      " hold, minus the same just before it, divided by the streams; fresh",
      " servers each run. *nginx alone* holds the same number of requests",
      " for as long with nothing of chatbridge in the way (`return 200`",
      " with the same answer, trickled by `limit_rate`): what nginx itself",
      " needs per request.";
    p "";
    p "| streams | server | late | failed | total p99 ms | memory per stream | of which nginx | sidecar | shared segment | vs nginx alone |";
    p "|---|---|---|---|---|---|---|---|---|---|";
    for my $n (@holds) {
        for my $target (qw(bridge nginx direct)) {
            next unless values_of('hold', $target, $n, 'done');
            my $name = { bridge => '**chatbridge**',
                         nginx => 'nginx alone',
                         direct => 'direct server' }->{$target};
            my $kib = sub { my @v = values_of('hold', $target, $n, $_[0]);
                            @v ? cell(map { $_ / 1024 } @v) . ' KiB'
                               : '–' };
            my $parts = $target eq 'bridge'
                ? join(' | ', $kib->('mem_a_b'), $kib->('mem_b_b'),
                       $kib->('mem_shm_b'))
                : $target eq 'nginx' ? $kib->('mem_a_b') . ' | – | –'
                : '– | – | –';
            p "| ", num($n), " | $name | ",
              stat_cell('hold', $target, $n, 'late'),
              " | ", stat_cell('hold', $target, $n, 'failed'),
              " | ", stat_cell('hold', $target, $n, 'total_p99_ms'),
              " | ", $kib->('mem_per_stream_b'), " | $parts",
              " | ", ratio(med('hold', $target, $n, 'mem_per_stream_b'),
                           med('hold', 'nginx', $n, 'mem_per_stream_b')),
              " |";
        }
    }
    p "";
}

# --- round trip

if (@ws) {
    my @ws_a = values_of('rtt', 'websocket-awake', 1, 'rtt_p50_us');
    my @br_a = values_of('rtt', 'bridge-awake', 1, 'p50_us');
    my @added_a = added('-awake');

    p "## Round trip";
    p "";
    p "A bare WebSocket round trip: `cb_browser --rtt` sends a WebSocket",
      " ping on the browsers' path (", ($meta{browser} eq 'direct'
      ? 'to the sidecar\'s socket' : 'through nginx to the sidecar'),
      ") and waits for the pong, one at a time. The bridge's: one",
      " non-streamed request at c=1, client to nginx to sidecar to browser",
      " and back. Added: the difference of the p50s, run by run.";
    p "";
    p "Every hop between the two CPUs wakes an idle vCPU. This machine is a",
      " virtual machine whose guest does not poll before halting",
      " (`haltpoll.guest_halt_poll_ns=0` here), so each such wake-up costs",
      " tens of microseconds in the host: a request through the bridge",
      " makes four of them, a WebSocket round trip two. The *vCPUs kept",
      " awake* rows measure the same with a `SCHED_IDLE` busy loop",
      " (`build/bench/cb_spin`) on each CPU, which runs only when nothing",
      " else wants the CPU and keeps it from halting: what is left is the",
      " servers' own work." if @ws_a;
    p "" if @ws_a;
    p "| | p50 µs | p99 µs |";
    p "|---|---|---|";
    p "| bare WebSocket round trip | ", cell(@ws), " | ",
      cell(values_of('rtt', 'websocket', 1, 'rtt_p99_us')), " |";
    p "| chatbridge request, c=1 | ", cell(@br), " | ",
      cell(values_of('rtt', 'bridge', 1, 'p99_us')), " |";
    p "| nginx `return 200`, c=1 | ",
      stat_cell('rtt', 'nginx', 1, 'p50_us'), " | ",
      stat_cell('rtt', 'nginx', 1, 'p99_us'), " |";
    p "| **added by chatbridge** | ", cell(@added), " | |";
    if (@ws_a) {
        p "| bare WebSocket round trip, vCPUs kept awake | ", cell(@ws_a),
          " | ", cell(values_of('rtt', 'websocket-awake', 1, 'rtt_p99_us')),
          " |";
        p "| chatbridge request, c=1, vCPUs kept awake | ", cell(@br_a),
          " | ", cell(values_of('rtt', 'bridge-awake', 1, 'p99_us')), " |";
        p "| nginx `return 200`, c=1, vCPUs kept awake | ",
          stat_cell('rtt', 'nginx-awake', 1, 'p50_us'), " | ",
          stat_cell('rtt', 'nginx-awake', 1, 'p99_us'), " |";
        p "| **added by chatbridge, vCPUs kept awake** | ", cell(@added_a),
          " | |";
    }
    p "";
}

my $notes = dirname($0) . '/notes.md';
if (-r $notes) {
    open my $nf, '<', $notes or die "$notes: $!";
    local $/;
    p <$nf>;
}

print $out;
