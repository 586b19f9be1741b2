package testenv_test

import (
	"testing"

	"github.com/enclaved/enclaved/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
