package swarm

import "sync"

// group owns goroutines: once closed it starts no more, and wait returns
// when all it started have returned. Unlike a bare WaitGroup it is safe to
// start goroutines (from request handlers, say) while another goroutine
// waits.
type group struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// enter counts one more running task, unless the group is closed.
func (g *group) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	return true
}

func (g *group) leave() { g.wg.Done() }

// spawn runs f in a new goroutine owned by g, unless g is closed.
func (g *group) spawn(f func()) bool {
	if !g.enter() {
		return false
	}
	go func() {
		defer g.leave()
		f()
	}()
	return true
}

// closeAndWait refuses new tasks and waits for the running ones.
func (g *group) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
