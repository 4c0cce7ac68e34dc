package packaging_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkLintian runs lintian once over every package in dir and fails on
// each error. Overrides live in packaging/lintian, each with its reason.
func checkLintian(t *testing.T, dir string) {
	t.Helper()
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatal("lintian is missing; scripts/setup.sh or .ci/run installs it")
	}
	debs, err := filepath.Glob(filepath.Join(dir, "*.deb"))
	if err != nil || len(debs) == 0 {
		t.Fatalf("no packages in %s: %v", dir, err)
	}
	// About a minute on a busy 2-core machine; the bound keeps a stuck
	// lintian from holding the suite.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "lintian", append([]string{"--tag-display-limit", "0"}, debs...)...).CombinedOutput()
	t.Logf("lintian checked %d packages in %v", len(debs), time.Since(start).Round(time.Second))
	errs := 0
	for _, line := range lines(string(out)) {
		switch {
		case strings.HasPrefix(line, "E: "):
			errs++
			t.Errorf("lintian: %s", line)
		case strings.HasPrefix(line, "W: "):
			t.Logf("lintian: %s", line)
		}
	}
	// lintian exits 2 when it reported an error; any other failure is its own.
	if err != nil && errs == 0 {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	checkOverrides(t)
}

// checkOverrides: every lintian override in packaging/lintian follows a
// comment that gives its reason.
func checkOverrides(t *testing.T) {
	t.Helper()
	files, err := filepath.Glob("lintian/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		commented := false
		for _, line := range strings.Split(string(data), "\n") {
			switch {
			case strings.HasPrefix(line, "#"):
				commented = true
			case strings.TrimSpace(line) == "":
				commented = false
			case !commented:
				t.Errorf("%s: override %q has no comment giving its reason", f, line)
			}
		}
	}
}

// libPackages names the Debian package of each C library a binary may
// need, and how a symbol version node of it maps to that package's version.
var libPackages = map[string]string{
	"libc.so.6":       "libc6",
	"libm.so.6":       "libc6",
	"libpthread.so.0": "libc6",
	"libdl.so.2":      "libc6",
	"libstdc++.so.6":  "libstdc++6",
	"libgcc_s.so.1":   "libgcc-s1",
}

// checkDepends reads the libraries and symbol versions the binary needs
// from its ELF dynamic section and checks the package's Depends covers
// each: libc6 at least the newest GLIBC_ version, libgcc-s1 the newest
// GCC_, libstdc++6 the version that brought the newest GLIBCXX_/CXXABI_
// node (Debian's symbols file of libstdc++6 on this machine says which).
// A static binary needs nothing.
func checkDepends(t *testing.T, info string, bin []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatalf("read the binary's needed libraries: %v", err)
	}
	need := map[string]string{} // package → lowest version that serves, "0" for any
	why := map[string]string{}
	for _, lib := range libs {
		pkg := libPackages[lib]
		if strings.HasPrefix(lib, "ld-linux") {
			pkg = "libc6"
		}
		if pkg == "" {
			t.Errorf("the binary needs %s: add its Debian package to libPackages and scripts/deb.sh", lib)
			continue
		}
		if need[pkg] == "" {
			need[pkg], why[pkg] = "0", lib
		}
	}
	vneeds, err := f.DynamicVersionNeeds()
	if err != nil && len(libs) > 0 {
		t.Fatalf("read the binary's symbol versions: %v", err)
	}
	for _, vn := range vneeds {
		pkg := libPackages[vn.Name]
		if strings.HasPrefix(vn.Name, "ld-linux") {
			pkg = "libc6"
		}
		for _, dep := range vn.Needs {
			v := nodeVersion(t, pkg, dep.Dep)
			if v != "" && versionGT(t, v, need[pkg]) {
				need[pkg], why[pkg] = v, dep.Dep+" of "+vn.Name
			}
		}
	}
	depends := map[string]string{} // package → its (>= V), "" if unversioned
	for _, line := range lines(info) {
		field, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: ")
		if !ok {
			continue
		}
		for _, d := range strings.Split(field, ",") {
			name, ver, _ := strings.Cut(strings.TrimSpace(d), " ")
			depends[name] = strings.TrimSuffix(strings.TrimPrefix(ver, "(>= "), ")")
		}
	}
	for pkg, v := range need {
		got, ok := depends[pkg]
		switch {
		case !ok:
			t.Errorf("Depends lacks %s (>= %s): the binary needs %s", pkg, v, why[pkg])
		case v != "0" && (got == "" || versionGT(t, v, got)):
			t.Errorf("Depends has %s (>= %s), but the binary needs %s (%s)", pkg, got, v, why[pkg])
		default:
			t.Logf("Depends: %s (>= %s) covers %s", pkg, got, why[pkg])
		}
	}
}

// nodeVersion maps a symbol version node to the version of pkg that
// provides it; "" for a node that asks nothing of the version.
func nodeVersion(t *testing.T, pkg, node string) string {
	t.Helper()
	switch {
	case pkg == "libc6" && strings.HasPrefix(node, "GLIBC_2"):
		return strings.TrimPrefix(node, "GLIBC_")
	case pkg == "libgcc-s1" && strings.HasPrefix(node, "GCC_"):
		return strings.TrimPrefix(node, "GCC_")
	case pkg == "libstdc++6" && (strings.HasPrefix(node, "GLIBCXX_") || strings.HasPrefix(node, "CXXABI_")):
		path, err := exec.CommandContext(t.Context(), "dpkg-query", "--control-path", "libstdc++6", "symbols").Output()
		if err != nil {
			t.Fatalf("dpkg-query --control-path libstdc++6 symbols: %v (install g++)", err)
		}
		data, err := os.ReadFile(strings.TrimSpace(string(path)))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == node+"@"+node {
				return fields[1]
			}
		}
		t.Errorf("the binary needs %s, which libstdc++6's symbols file does not list", node)
	}
	return ""
}

// versionGT is dpkg's a > b; "" and "0" sort first.
func versionGT(t *testing.T, a, b string) bool {
	t.Helper()
	if b == "" {
		return a != ""
	}
	err := exec.CommandContext(t.Context(), "dpkg", "--compare-versions", a, "gt", b).Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("dpkg --compare-versions: %v", err)
	}
	return err == nil
}

// checkManPages: a gzipped page per command, made from the cobra tree of
// the packaged binary, named NAME.1.gz and NAME-SUB….1.gz, and only the
// package's own.
func checkManPages(t *testing.T, files map[string]file, p pkg) {
	t.Helper()
	var pages []string
	for path := range files {
		if name, ok := strings.CutPrefix(path, "/usr/share/man/man1/"); ok {
			pages = append(pages, name)
		}
	}
	slices.Sort(pages)
	sub := map[string]string{"uploadbox": "uploadbox-enroll.1.gz", "uploadbox-receiver": "uploadbox-receiver-devices-add.1.gz"}[p.name]
	if !slices.Contains(pages, p.name+".1.gz") || !slices.Contains(pages, sub) {
		t.Errorf("manual pages %q lack %s.1.gz or %s", pages, p.name, sub)
	}
	for _, page := range pages {
		if p.name == "uploadbox" && strings.HasPrefix(page, "uploadbox-receiver") {
			t.Errorf("the box package holds the receiver's page %s", page)
		}
		r, err := gzip.NewReader(bytes.NewReader(files["/usr/share/man/man1/"+page].data))
		if err != nil {
			t.Errorf("%s is not gzipped: %v", page, err)
			continue
		}
		text, err := io.ReadAll(r)
		if err != nil {
			t.Errorf("%s: %v", page, err)
			continue
		}
		name := strings.TrimSuffix(page, ".1.gz")
		if !bytes.HasPrefix(text, []byte(".TH \""+strings.ToUpper(strings.ReplaceAll(name, "-", `\-`))+"\" 1")) {
			t.Errorf("%s does not start with its .TH line:\n%.200s", page, text)
		}
	}
}

// checkCompletion: cobra's bash and zsh completion for the binary.
func checkCompletion(t *testing.T, files map[string]file, p pkg) {
	t.Helper()
	for path, want := range map[string]string{
		"/usr/share/bash-completion/completions/" + p.name: "complete -o default -F __start_" + p.name + " " + p.name,
		"/usr/share/zsh/vendor-completions/_" + p.name:     "#compdef " + p.name,
	} {
		if f, ok := files[path]; !ok || !bytes.Contains(f.data, []byte(want)) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
}

// checkChangelog: a native package's changelog.gz whose entry is this
// version, by the maintainer of the control file.
func checkChangelog(t *testing.T, files map[string]file, p pkg) {
	t.Helper()
	f, ok := files["/usr/share/doc/"+p.name+"/changelog.gz"]
	if !ok {
		return
	}
	r, err := gzip.NewReader(bytes.NewReader(f.data))
	if err != nil {
		t.Fatalf("changelog.gz: %v", err)
	}
	text, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	head := regexp.MustCompile(`^` + regexp.QuoteMeta(p.name+" ("+debVersion+") unstable; urgency=medium") + `\n`)
	trailer := regexp.MustCompile(`(?m)^ -- uploadbox maintainers <packaging@uploadbox\.org>  \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$`)
	if !head.Match(text) || !trailer.Match(text) || !bytes.Contains(text, []byte(testCommit)) {
		t.Errorf("changelog.gz is not an entry for %s %s (commit %s) by the maintainer:\n%s", p.name, debVersion, testCommit, text)
	}
}

// checkLicences: third-party-licenses.gz holds a licence file of Go and
// of every module the packaged binary's build information lists.
func checkLicences(t *testing.T, files map[string]file, p pkg, bin []byte) {
	t.Helper()
	path := "/usr/share/doc/" + p.name + "/third-party-licenses.gz"
	f, ok := files[path]
	if !ok {
		t.Errorf("%s is not in the package", path)
		return
	}
	r, err := gzip.NewReader(bytes.NewReader(f.data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	text, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("read the binary's build information: %v", err)
	}
	want := []string{"==== go " + bi.GoVersion + ": LICENSE"}
	for _, d := range bi.Deps {
		want = append(want, "==== "+d.Path+" "+d.Version+": ")
	}
	for _, w := range want {
		if !bytes.Contains(text, []byte(w)) {
			t.Errorf("%s has no licence for %q", path, strings.TrimPrefix(w, "==== "))
		}
	}
}
