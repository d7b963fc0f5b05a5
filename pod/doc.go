// Package pod runs a Kubernetes pod's sandbox for the shim sandbox API
// (containerd 2.x, a CRI runtime handler with sandboxer = "shim"): no pause
// image, no pause container, no runtime call.
//
// A pod is a holder process and a few files. The holder owns the pod's
// namespaces: it is started in the network namespace the CRI plugin made
// (or the host's, for a host-network pod), in new IPC and UTS namespaces
// (the UTS one named with the pod's hostname), and, for a pod that shares
// its process namespace, as PID 1 of a new PID namespace, where it reaps
// what is re-parented to it. The pod's containers join those namespaces
// through /proc/<holder pid>/ns/..., as the CRI plugin writes in their
// specs. On amd64 the holder is a 134-byte program assembled by hand
// (holder_amd64.go) that costs 12 KiB of memory; elsewhere it is a copy of
// the shim (Hold).
//
// The files are the ones the CRI plugin writes only for pause-container
// pods: hostname, hosts and resolv.conf, and a tmpfs for /dev/shm, kept in
// the sandbox's bundle; PatchSpec bind-mounts them into a container of the
// pod whose spec lacks them.
//
// Imports: reaper (the holder is the shim's child) and cgroup (the holder
// sits in the pod's cgroup parent).
package pod
