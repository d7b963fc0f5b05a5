package procfs

// StatField returns field n of a /proc/PID/stat line, numbered as proc(5)
// numbers them (1 pid, 2 comm, 3 state, 9 flags, 20 num_threads...), or nil
// when the line has no such field. Field 2, the command name in parentheses,
// may itself hold spaces and parentheses, so the fields after it are counted
// from the line's last ')': n must be 3 or more. The result aliases stat;
// StatField allocates nothing (the reaper calls it on every shed).
func StatField(stat []byte, n int) []byte {
	i := len(stat) - 1
	for i >= 0 && stat[i] != ')' {
		i--
	}
	if i < 0 || n < 3 {
		return nil
	}
	field, start := 2, -1 // the ')' ends field 2
	for j := i + 1; j <= len(stat); j++ {
		space := j == len(stat) || stat[j] == ' ' || stat[j] == '\n'
		switch {
		case !space && start < 0:
			start = j
			field++
		case space && start >= 0:
			if field == n {
				return stat[start:j]
			}
			start = -1
		}
	}
	return nil
}

// StatUint returns field n of a /proc/PID/stat line (as StatField) as an
// unsigned decimal, and false when there is no such field or it is not one.
func StatUint(stat []byte, n int) (uint64, bool) {
	f := StatField(stat, n)
	if len(f) == 0 || len(f) > 19 { // 19 digits cannot overflow a uint64
		return 0, false
	}
	var v uint64
	for _, c := range f {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
