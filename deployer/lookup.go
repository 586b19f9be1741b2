package deployer

import (
	"context"
	"fmt"
	"time"

	"github.com/enclaved/enclaved/records"
)

// Logs returns the last lines of a container's output.
func (d *Deployer) Logs(ctx context.Context, id string, lines int) (string, error) {
	rec, err := d.Records.Get(ctx, id)
	if err != nil {
		return "", err
	}
	if rec.DockerID == "" || rec.State == records.StateRemoved {
		return "", &records.UserError{Msg: fmt.Sprintf("%s has no logs: it is %s", rec.Name, rec.State)}
	}
	// Bounded: some engines leave a log read hanging while the container
	// restarts.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return d.rt.Logs(ctx, rec.DockerID, lines)
}
