package enclave

import (
	"context"
	"net/url"
	"strings"

	"github.com/enclaved/enclaved/deployer"
	"github.com/enclaved/enclaved/egress"
	"github.com/enclaved/enclaved/hostrouter"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/pages"
	"github.com/enclaved/enclaved/records"
	"github.com/enclaved/enclaved/zaps"
)

// containerHTTP is the address of the HTTP port of the running container
// called name.
func (in *Instance) containerHTTP(ctx context.Context, name string) (string, bool) {
	rec, err := in.Deployer.Records.Find(ctx, name)
	if err != nil {
		return "", false
	}
	return in.Deployer.Address(ctx, rec)
}

// ServesHost says whether host is the instance's public host or names a
// running container that serves HTTP: the names ACME certificates are
// asked for. Quotes (free to ask for) and stopped containers get none, so
// nobody can spend the domain's certificate quota for free.
func (in *Instance) ServesHost(ctx context.Context, host string) bool {
	public := in.cfg.HTTP.PublicURL
	u, err := url.Parse(public)
	if err != nil || public == "" {
		return false
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), strings.TrimSuffix(u.Hostname(), ".")) {
		return true
	}
	r := hostrouter.Router{Host: u.Hostname()}
	name, ok := r.ContainerName(host)
	if !ok {
		return false
	}
	rec, err := in.Deployer.Records.Find(ctx, name)
	return err == nil && rec.HTTPPort != 0 && rec.State == records.StateRunning
}

// links says where a container is reached: its lightning address while it
// can be zapped, and its page while it runs and serves HTTP.
func (in *Instance) links(rec records.Record) deployer.Links {
	var l deployer.Links
	if in.Zaps == nil {
		return l
	}
	if zaps.Zappable(rec.State) {
		l.Address = in.Zaps.Address(rec.Name)
	}
	if rec.HTTPPort != 0 && rec.State == records.StateRunning {
		l.Page = in.PageURL(rec.Name)
	}
	return l
}

// PageURL is where a container called name serves its HTTP port
// (NAME.<public host>), once Run has started.
func (in *Instance) PageURL(name string) string {
	if in.Zaps == nil {
		return ""
	}
	u := *in.Zaps.BaseURL
	u.Host = name + "." + u.Host
	u.Path = "/"
	return u.String()
}

// reachable says which relays the egress allowlist lets the instance
// reach (nil: no allowlist, every relay). DMs and zap receipts go only to
// those; the instance's own relays are always on it.
func reachable(allow []string) func(string) bool {
	if allow == nil {
		return nil
	}
	return func(u string) bool {
		hp, ok := nip.RelayHostPort(u)
		return ok && egress.Allowed(allow, hp)
	}
}

// pages are the instance's web pages (GET / and GET /c/{name}) on its
// public host, read from what the announcement and the HTTP API read.
func (in *Instance) pages() *pages.Site {
	return &pages.Site{Info: in.info(), Announcer: pageAnnouncement{in}, Containers: in.Deployer.Records,
		Reach: in.Deployer, LNURLs: in.Zaps, Now: in.now, Log: in.log.With("part", "pages")}
}
