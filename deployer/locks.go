package deployer

import "sync"

// idLocks serialises the lifecycle changes of each container on its own,
// so that one container's slow step (an image pull) never holds up another
// container's stop, start, delete or metering.
type idLocks struct {
	mu sync.Mutex
	m  map[string]*idLock
}

type idLock struct {
	sync.Mutex
	users int
}

// lock takes container id's lock and returns its release.
func (l *idLocks) lock(id string) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*idLock{}
	}
	k := l.m[id]
	if k == nil {
		k = &idLock{}
		l.m[id] = k
	}
	k.users++
	l.mu.Unlock()
	k.Lock()
	return l.release(id, k)
}

// tryLock takes id's lock if nobody holds or waits for it.
func (l *idLocks) tryLock(id string) (func(), bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*idLock{}
	}
	if l.m[id] != nil {
		return nil, false
	}
	k := &idLock{users: 1}
	k.Lock() // new: never held
	l.m[id] = k
	return l.release(id, k), true
}

// release is the function that gives back id's lock k.
func (l *idLocks) release(id string, k *idLock) func() {
	return func() {
		k.Unlock()
		l.mu.Lock()
		if k.users--; k.users == 0 {
			delete(l.m, id)
		}
		l.mu.Unlock()
	}
}
