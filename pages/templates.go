package pages

import (
	"embed"
	"html/template"
)

//go:embed html/*.html
var htmlFiles embed.FS

// templates are the pages: front, container, notfound and error, each
// between the layout's head and foot.
var templates = template.Must(template.ParseFS(htmlFiles, "html/*.html"))
