package hostrouter_test

import (
	"testing"

	"github.com/enclaved/enclaved/hostrouter"
)

// A public host written as a fully qualified name (http.public_url =
// "https://enclaved.example.com.") still routes NAME.<host> to container
// NAME, with or without the dot (found by FuzzContainerName: every
// container page went to the API).
func TestContainerNameUnderDottedPublicHost(t *testing.T) {
	r := &hostrouter.Router{Host: "enclaved.example.com."}
	for _, host := range []string{"web.enclaved.example.com", "web.enclaved.example.com.", "WEB.enclaved.example.com.:443"} {
		if got, ok := r.ContainerName(host); !ok || got != "web" {
			t.Errorf("ContainerName(%q) = %q, %v; want web", host, got, ok)
		}
	}
	if got, ok := r.ContainerName("enclaved.example.com."); ok {
		t.Errorf("the public host names container %q", got)
	}
}
