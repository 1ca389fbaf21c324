// Reading a runtime process from /proc: which workerd a Miniflare spawned, its CPU and RSS.
import fs from "node:fs";

const CLK_TCK = 100; // getconf CLK_TCK on Linux x86-64

/** PIDs of workerd processes whose parent is this Node process. */
export function workerdChildren() {
  const out = [];
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const ppid = Number(stat.slice(close + 2).split(" ")[1]);
      if (ppid === process.pid && comm.startsWith("workerd")) out.push(Number(name));
    } catch {}
  }
  return out;
}

/**
 * CPU time of a process so far, in microseconds: `stat` is utime+stime from /proc/<pid>/stat
 * (10 ms ticks), `sched` the sum of every thread's /proc/<pid>/task/<tid>/schedstat run time
 * (nanosecond resolution; the figure the tables use).
 */
export function cpuMicros(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(f[11]) + Number(f[12]); // fields 14 and 15 of the full line
  let ns = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try { ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]); } catch {}
  }
  return {
    stat: (ticks * 1e6) / CLK_TCK,
    user: (Number(f[11]) * 1e6) / CLK_TCK,
    sys: (Number(f[12]) * 1e6) / CLK_TCK,
    sched: ns / 1000,
  };
}

/** Resident set size of a process, in KiB (VmRSS of /proc/<pid>/status). */
export function rssKiB(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

/** Load average and the CPU the whole machine spent, for the report's "how loaded". */
export function machineLoad() {
  const [l1, l5, l15] = fs.readFileSync("/proc/loadavg", "utf8").split(" ").map(Number);
  return { load1: l1, load5: l5, load15: l15 };
}

/** Jiffies of the whole machine: { busy, total } from /proc/stat's cpu line. */
export function machineJiffies() {
  const line = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = line[3] + (line[4] || 0);
  const total = line.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}
