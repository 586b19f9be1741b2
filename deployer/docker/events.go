package docker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/errdefs"

	"github.com/enclaved/enclaved/deployer"
)

// Watch calls fn for each enclaved container that stopped ("die") or was
// removed ("destroy") since since (to the second: the engine replays what
// it saw from then), until ctx ends or the event stream fails; fn gets the
// event's container id and labels and is expected to look at the container
// itself (State), as events may come late or twice.
func (r *Runtime) Watch(ctx context.Context, since time.Time, fn func(id string, labels map[string]string)) error {
	msgs, errs := r.c.Events(ctx, events.ListOptions{Since: strconv.FormatInt(since.Unix(), 10), Filters: filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("event", string(events.ActionDie)),
		filters.Arg("event", string(events.ActionDestroy)),
		filters.Arg("label", deployer.LabelID),
	)})
	for {
		select {
		case m := <-msgs:
			fn(m.Actor.ID, m.Actor.Attributes)
		case err := <-errs:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil {
				err = errors.New("event stream closed")
			}
			return fmt.Errorf("docker events: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// State is what the engine says of one container now; Gone when it has no
// such container.
func (r *Runtime) State(ctx context.Context, id string) (deployer.State, error) {
	info, err := r.c.ContainerInspect(ctx, id)
	if errdefs.IsNotFound(err) {
		return deployer.State{Gone: true}, nil
	}
	if err != nil {
		return deployer.State{}, err
	}
	s := deployer.State{}
	if st := info.State; st != nil {
		s.Running, s.ExitCode, s.OOMKilled = st.Running, st.ExitCode, st.OOMKilled
		if t, err := time.Parse(time.RFC3339Nano, st.FinishedAt); err == nil && t.Year() > 1 {
			s.FinishedAt = t
		}
	}
	return s, nil
}
