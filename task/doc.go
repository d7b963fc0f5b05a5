// Package task serves containerd's task API (containerd.task.v2.Task) over the
// shim's processes: it translates wire messages to process calls, keeps the
// id → container registry, orders and publishes the task events, and maps
// errors to ttrpc status codes (toStatus, the only place that does).
//
// Wire types stop here: process, stdio and the rest never see a proto type.
// task makes no syscalls, runs no runtime binary and copies no IO.
package task
