package oci

import "strconv"

// Config describes one runtime binary as used for one container.
type Config struct {
	Binary        string `json:"binary,omitempty"` // name or path; "runc" when empty
	Root          string `json:"root"`             // state root, e.g. /run/containerd/runc/<namespace>
	Log           string `json:"log,omitempty"`    // JSON log file, e.g. <bundle>/log.json
	SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
	Debug         bool   `json:"debug,omitempty"`
	// Criu is the criu binary runc checkpoints and restores with
	// (--criu; runc's default is "criu" on its PATH). containerd 1.6's
	// runc shim passes its criu_path option the same way.
	Criu string `json:"criu,omitempty"`
}

// CreateOpts are the options of Create.
type CreateOpts struct {
	Bundle        string
	PidFile       string
	ConsoleSocket string
	NoPivot       bool
	NoNewKeyring  bool
	Stdio         Stdio
}

// ExecOpts are the options of Exec.
type ExecOpts struct {
	ProcessFile   string // JSON OCI Process
	PidFile       string
	ConsoleSocket string
	Stdio         Stdio
}

func (c Config) binary() string {
	if c.Binary == "" {
		return "runc"
	}
	return c.Binary
}

// globalArgs are the flags that precede subcommand sub.
func (c Config) globalArgs(sub string) []string {
	args := []string{"--root", c.Root}
	if c.Debug {
		args = append(args, "--debug")
	}
	if c.Log != "" {
		args = append(args, "--log", c.Log, "--log-format", "json")
	}
	// Only where CRIU runs. containerd's runc shim passes --criu to every
	// command; runc accepts it everywhere, but crun has no such flag, and a
	// criu path would then break every crun command, not just checkpoints.
	if c.Criu != "" && (sub == "checkpoint" || sub == "restore") {
		args = append(args, "--criu", c.Criu)
	}
	if c.SystemdCgroup {
		args = append(args, "--systemd-cgroup")
	}
	return args
}

func createArgs(id string, o CreateOpts) []string {
	args := []string{"create", "--bundle", o.Bundle}
	if o.PidFile != "" {
		args = append(args, "--pid-file", o.PidFile)
	}
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	if o.NoPivot {
		args = append(args, "--no-pivot")
	}
	if o.NoNewKeyring {
		args = append(args, "--no-new-keyring")
	}
	return append(args, id)
}

func execArgs(id string, o ExecOpts) []string {
	args := []string{"exec", "--process", o.ProcessFile, "--detach"}
	if o.PidFile != "" {
		args = append(args, "--pid-file", o.PidFile)
	}
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	return append(args, id)
}

func killArgs(id string, sig int, all bool) []string {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	return append(args, id, strconv.Itoa(sig))
}

func deleteArgs(id string, force bool) []string {
	if force {
		return []string{"delete", "--force", id}
	}
	return []string{"delete", id}
}
