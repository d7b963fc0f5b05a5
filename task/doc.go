// Package task serves containerd's task API (containerd.task.v2.Task, also
// registered as containerd.task.v3.Task) over the shim's processes: it
// translates wire messages to process calls, keeps the id → container
// registry, orders and publishes the task events, and maps errors to ttrpc
// status codes (toStatus, the only place that does). V1 is a thin adapter
// that serves containerd 1.6's v1 shim API by calling that same Service.
//
// Wire types stop here: process, stdio and the rest never see a proto type.
// task runs no runtime binary, copies no IO and makes no process, mount or
// cgroup syscall: it reaches the kernel through process and cgroup. Its only
// system calls of its own read its input (a runtime options file named by
// config_path, readConfigFile) and its pid (Connect).
package task
