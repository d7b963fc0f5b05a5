package reaper

// Tracker keeps the exits of processes whose pid is not known yet. Open one
// with Track before running a command that creates such a process (runc create,
// runc exec --detach), Claim the pid once it is known, then Close it.
type Tracker struct {
	r     *Reaper
	exits map[int]Exit // guarded by r.mu
}

// Track opens a Tracker. From now until Close, every exit that no waiter
// claims is kept in it.
func (r *Reaper) Track() *Tracker {
	t := &Tracker{r: r, exits: make(map[int]Exit)}
	r.mu.Lock()
	r.trackers[t] = struct{}{}
	r.mu.Unlock()
	return t
}

// Claim returns a channel that receives the exit of pid exactly once: at once
// if the process was already reaped while the tracker was open, otherwise when
// it is reaped. Claiming a pid twice replaces the first claim.
func (t *Tracker) Claim(pid int) <-chan Exit {
	ch := make(chan Exit, 1)
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	if e, ok := t.exits[pid]; ok {
		delete(t.exits, pid)
		ch <- e
		return ch
	}
	t.r.waiters[pid] = ch
	return ch
}

// Close stops keeping exits and drops those nobody claimed (runc's own
// intermediate processes). It is safe to call more than once.
func (t *Tracker) Close() {
	t.r.mu.Lock()
	delete(t.r.trackers, t)
	t.exits = nil
	t.r.mu.Unlock()
}
