// Package cgroup reads a container's cgroup the way containerd's runc shim
// does, without running the OCI runtime: it finds the cgroup (from the init's
// pid or the spec's cgroupsPath), reads its statistics straight from the
// cgroup files into containerd's own metrics messages, and watches it for
// out-of-memory events.
//
// A Hierarchy is the machine's cgroup layout (Detect): cgroup v1, where each
// controller has its own mount (also the "hybrid" layout, whose cgroup2
// mount at /sys/fs/cgroup/unified holds no memory controller), or the cgroup
// v2 unified hierarchy. A Cgroup is one container's cgroup in it. Stats
// returns an io.containerd.cgroups.v1.Metrics or io.containerd.cgroups.v2.Metrics.
//
// One OOMWatcher serves every container of a shim from a single goroutine
// (its Run): on v1 an eventfd registered on memory.oom_control through
// cgroup.event_control, on v2 an inotify watch on memory.events whose oom_kill
// count must grow, all multiplexed by one epoll instance that Go's poller
// waits on, so no OS thread is blocked. Remove makes a last check, so an OOM
// kill that happened just before the container exited is still reported, and
// is reported before Remove returns.
//
// cgroup imports only the standard library, golang.org/x/sys and the metrics
// packages proto/cgroups/v1 and proto/cgroups/v2; it never imports task,
// process or oci.
package cgroup
