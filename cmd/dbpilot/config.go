package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Config is $XDG_CONFIG_HOME/dbpilot/config.yaml (mode 0600: it holds
// tokens).
type Config struct {
	// CurrentContext names the context used when --context is not given.
	CurrentContext string `yaml:"current-context"`
	// Contexts are the known servers.
	Contexts []Context `yaml:"contexts"`
}

// Context is one server, the token used there and a default namespace.
type Context struct {
	Name      string `yaml:"name" json:"name"`
	Server    string `yaml:"server" json:"server"`
	Token     string `yaml:"token" json:"-"`
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
}

func (c *Config) find(name string) (Context, bool) {
	for _, x := range c.Contexts {
		if x.Name == name {
			return x, true
		}
	}
	return Context{}, false
}

// put adds or replaces a context.
func (c *Config) put(x Context) {
	for i := range c.Contexts {
		if c.Contexts[i].Name == x.Name {
			c.Contexts[i] = x
			return
		}
	}
	c.Contexts = append(c.Contexts, x)
}

// configPath is $XDG_CONFIG_HOME/dbpilot/config.yaml, else
// $HOME/.config/dbpilot/config.yaml.
func (a *app) configPath() (string, error) {
	dir := a.getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := a.getenv("HOME")
		if home == "" {
			return "", errors.New("config: neither XDG_CONFIG_HOME nor HOME is set")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "dbpilot", "config.yaml"), nil
}

// loadConfig reads the config strictly; a missing file is an empty config.
func (a *app) loadConfig() (Config, string, error) {
	p, err := a.configPath()
	if err != nil {
		return Config{}, "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Config{}, p, nil
	}
	if err != nil {
		return Config{}, p, fmt.Errorf("config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, errEOF) {
		return Config{}, p, fmt.Errorf("config %s: %w", p, err)
	}
	return c, p, nil
}

// saveConfig writes the config atomically with mode 0600.
func (a *app) saveConfig(c Config) (string, error) {
	p, err := a.configPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return p, fmt.Errorf("config: %w", err)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return p, fmt.Errorf("config: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".config-*.yaml")
	if err != nil {
		return p, fmt.Errorf("config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return p, fmt.Errorf("config: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return p, fmt.Errorf("config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return p, fmt.Errorf("config: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return p, fmt.Errorf("config: %w", err)
	}
	return p, nil
}
