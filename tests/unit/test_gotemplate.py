"""Docker's --format templates (Go's text/template subset): each construct, Go's printing, and
errors that say what, why and how to fix (exit 2). Expected texts are what Docker prints."""
import pytest

from netdiag.cli.gotemplate import Fields, TemplateError, render
from netdiag.cli.output import tabwriter

CONTAINER = {
    "Id": "4f1c2d", "Name": "/web",
    "State": {"Status": "running", "Running": True, "Pid": 4242, "ExitCode": 0},
    "Config": {"Cmd": ["sh", "-c", "httpd -f"], "Labels": {"com.example.tier": "front", "app": "web"}, "Env": []},
    "NetworkSettings": {"Networks": {
        "bridge": {"IPAddress": "172.17.0.2", "Aliases": None},
        "back-end": {"IPAddress": "10.5.0.3", "Aliases": ["web", "www"]},
    }},
    "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}},
}


@pytest.mark.parametrize("template, expected", [
    ("{{.Name}}", "/web"),
    ("name: {{.Name}}!", "name: /web!"),
    ("{{.NetworkSettings.Networks.bridge.IPAddress}}", "172.17.0.2"),
    ("{{.State.Pid}} {{.State.Running}}", "4242 true"),
    ('{{index .Config.Labels "com.example.tier"}}', "front"),
    ('{{(index .NetworkSettings.Networks "back-end").IPAddress}}', "10.5.0.3"),
    ('{{index .HostConfig.PortBindings "80/tcp" 0 "HostPort"}}', "8080"),
    ('{{index .Config.Labels "nokey"}}|{{index .NetworkSettings.Networks "nonet"}}', "|<no value>"),
    ("{{json .Config.Cmd}}", '["sh","-c","httpd -f"]'),
    ("{{json .State}}", '{"Status":"running","Running":true,"Pid":4242,"ExitCode":0}'),
    ("{{.Config.Cmd}}", "[sh -c httpd -f]"),
    ("{{.Config.Labels}}", "map[app:web com.example.tier:front]"),
    ("{{.Config.Env}}", "[]"),
    ("{{.NoSuchField}}", "<no value>"),
    ("{{.NetworkSettings.Networks.nonet.IPAddress}}", "<no value>"),
    ("{{.NetworkSettings.Networks.bridge.Aliases}}", "<nil>"),
    ("{{range .Config.Cmd}}[{{.}}]{{end}}", "[sh][-c][httpd -f]"),
    ("{{range $i, $a := .Config.Cmd}}{{$i}}={{$a}} {{end}}", "0=sh 1=-c 2=httpd -f "),
    ("{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}", "back-end=10.5.0.3 bridge=172.17.0.2 "),
    ("{{range $net := .NetworkSettings.Networks}}{{$net.IPAddress}},{{end}}", "10.5.0.3,172.17.0.2,"),
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "10.5.0.3 172.17.0.2 "),
    ("{{range .Config.Env}}x{{else}}none{{end}}", "none"),
    ("{{range $i, $a := .Config.Cmd}}{{if eq $i 1}}{{continue}}{{end}}{{if eq $i 2}}{{break}}{{end}}{{$a}}{{end}}", "sh"),
    ("{{range 3}}{{.}}{{end}}", "012"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if .Config.Env}}env{{else if .Config.Cmd}}cmd{{else}}none{{end}}", "cmd"),
    ("{{if not .State.Running}}down{{end}}", ""),
    ('{{if and .State.Running (eq .State.Status "running")}}ok{{end}}', "ok"),
    ('{{if or .Config.Env .Config.Cmd}}some{{end}}', "some"),
    ('{{if and .NoLabels (index .Name "x")}}x{{else}}short-circuit{{end}}', "short-circuit"),
    ('{{or .Config.Env "none"}} {{and 1 0}} {{.State.Running | and 1}}', "none 0 true"),
    ('{{index .NoLabels "x"}}', "<no value>"),
    ("{{with .NetworkSettings.Networks.bridge}}{{.IPAddress}}{{end}}", "172.17.0.2"),
    ("{{with .NetworkSettings.Networks.nonet}}{{.IPAddress}}{{else}}not attached{{end}}", "not attached"),
    ("{{$ip := .NetworkSettings.Networks.bridge.IPAddress}}{{$ip}}/{{$.Name}}", "172.17.0.2//web"),
    ("{{$n := 1}}{{$n = 2}}{{$n}}", "2"),
    ('{{.Name | printf "%s is up"}}', "/web is up"),
    ('{{printf "%-6s|%5d|%q|%v|%05d|%x" "ab" 42 "q" true 7 255}}', 'ab    |   42|"q"|true|00007|ff'),
    ('{{printf "%.2f" 3.14159}}', "3.14"),
    ("{{upper .State.Status}} {{lower \"ABC\"}} {{title \"web front\"}}", "RUNNING abc Web Front"),
    ('{{join .Config.Cmd ","}}', "sh,-c,httpd -f"),
    ('{{split "a:b:c" ":"}}', "[a b c]"),
    ("{{len .Config.Cmd}} {{len .NetworkSettings.Networks}}", "3 2"),
    ('{{truncate "abcdef" 3}}|{{pad "x" 1 2}}|{{pad "" 1 2}}', "abc| x  |"),
    ("{{slice .Id 0 3}}", "4f1"),
    ('{{"a\\tb"}}{{`raw\\t`}}', "a\tbraw\\t"),
    ("{{print 1 2 \"x\" 3}}", "1 2x3"),
    ("{{println .Name}}", "/web\n"),
    ("{{gt .State.Pid 1000}} {{lt 1 2}} {{ge 2 2}} {{le 3 2}} {{ne .Name \"/db\"}}", "true true true false true"),
    ('{{eq .State.Status "exited" "running"}}', "true"),
    ("a {{- /* a comment */ -}}  b", "ab"),
    ("{{- .Name -}}\n", "/web"),
    ("{{1.5}} {{1e6}} {{0.00001}} {{123456.0}} {{true}} {{nil}}", "1.5 1e+06 1e-05 123456 true <nil>"),
])
def test_constructs_print_what_go_prints(template, expected):
    assert render(template, CONTAINER) == expected


def test_json_of_the_object_is_compact_and_keeps_the_order():
    assert render("{{json .}}", {"b": 1, "a": "<&>"}) == '{"b":1,"a":"<&>"}'


@pytest.mark.parametrize("template, words", [
    ("{{.Name", "no closing"),
    ("{{if .Name}}x", "no {{end}}"),
    ("x{{end}}", "no if, range or with"),
    ("{{else}}", "no if, range or with"),
    ("{{nosuch .Name}}", "functions are"),
    ("{{.Name .Id}}", "only functions take arguments"),
    ("{{.Name | .Id}}", "only functions take piped values"),
    ("{{$x}}", "not declared"),
    ("{{$x = 1}}", "declared before"),
    ("{{range .Name}}{{end}}", "not a list or map"),
    ("{{.Name.First}}", "no fields"),
    ('{{index .Name "x"}}', "index takes a map"),
    ("{{index .Config.Cmd 7}}", "has 3 items"),
    ('{{eq .State.Pid "x"}}', "cannot be compared"),
    ('{{lt .Name 1}}', "only numbers with numbers"),
    ('{{join .Config.Cmd}}', "join"),
    ("{{upper .State.Pid}}", "upper takes a string"),
    ("{{template \"x\"}}", "not supported"),
    ("{{(.Name}}", "Unclosed ("),
    ("{{}}", "Empty action"),
    ('{{"\\q"}}', "escapes"),
    ("{{.Name ! }}", "unexpected '!'"),
])
def test_errors_say_what_why_and_fix_and_exit_2(template, words):
    with pytest.raises(TemplateError) as e:
        render(template, CONTAINER)
    assert words.lower() in str(e.value).lower() and e.value.exit_code == 2 and e.value.fix, str(e.value)


def test_a_listing_row_refuses_unknown_fields_naming_the_real_ones():
    row = Fields(ID="abc", Names="web")
    assert render("{{.Names}}", row) == "web"
    with pytest.raises(TemplateError) as e:
        render("{{.Name}}", row)
    assert "Cannot evaluate field Name" in str(e.value) and ".Names" in e.value.why


def test_tabwriter_aligns_like_dockers_table():
    # minimum width 10, padding 3, the last cell of a line never padded
    assert tabwriter(["NAMES\tSTATUS", "web\tUp 2 minutes", "a-much-longer-name\tExited (0) 1 second ago"]) == (
        "NAMES                STATUS\n"
        "web                  Up 2 minutes\n"
        "a-much-longer-name   Exited (0) 1 second ago\n")
    assert tabwriter(["A\tB", "x\ty"]) == "A         B\nx         y\n"
