"""kubelab.facts.Facts: several facts in one round trip, each answered as pyinfra would
answer it alone. The command runs here, in sh, as it would on a host."""
import subprocess

from pyinfra.api import FactBase

from kubelab.facts import Facts, FileState


class Echo(FactBase):
    def command(self, text):
        return f"printf '%s\\n' {text}"

    def process(self, output):
        return list(output)


class Nothing(FactBase):
    default = dict

    def command(self):
        return "true"


class Fails(FactBase):
    def command(self):
        return "echo half; exit 3"


def asked_together(asked):
    fact = Facts()
    command = fact.command(asked=asked)
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    return fact.process(output.stdout.splitlines())


def test_each_fact_gets_its_own_lines_in_order(tmp_path):
    present = tmp_path / "present"
    present.write_text("x")
    answers = asked_together([(Echo, {"text": "a b"}), (Nothing, {}),
                              (FileState, {"path": str(present)}),
                              (FileState, {"path": str(tmp_path / "no")}), (Echo, {"text": "c"})])
    assert answers[0] == ["a", "b"] and answers[4] == ["c"]
    assert answers[1] == {}                 # no output: the fact's default, as pyinfra does
    assert answers[3] is None
    assert answers[2]["sha256"] == \
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"


def test_a_failed_fact_is_marked_for_asking_alone():
    answers = asked_together([(Echo, {"text": "a"}), (Fails, {}), (Echo, {"text": "b"})])
    assert answers[0] == ["a"] and answers[2] == ["b"]
    assert answers[1] is Facts.FAILED
