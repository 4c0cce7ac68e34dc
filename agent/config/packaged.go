package config

// PackagedStateDir is the state directory of the packaged daemon: state_dir
// of the config at DefaultPath, read without environment overrides (those
// of the caller are not the daemon's), else the default.
func PackagedStateDir() string {
	if c, err := Load(DefaultPath, []string{}); err == nil {
		return c.StateDir
	}
	return Default().StateDir
}
