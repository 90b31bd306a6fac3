"""
The README's examples, run as written against a real daemon.
"""

import json

import treq
from twisted.trial.unittest import TestCase

from tests.daemon import startDaemon

GITHUB_RULE = {
    "name": "github_push",
    "pack": "deploy",
    "enabled": True,
    "trigger": {"type": "core.st2.webhook", "parameters": {"url": "github"}},
    "criteria": {
        "trigger.headers['X-Github-Event']": {"type": "equals", "pattern": "push"},
        "trigger.body.ref": {"type": "equals", "pattern": "refs/heads/main"},
    },
    "action": {"ref": "core.local", "parameters": {"cmd": "echo deploying {{ trigger.body.after | shell_quote }}"}},
}


class GitHubExampleTests(TestCase):
    timeout = 60

    async def test_githubPush(self):
        """
        A GitHub-shaped delivery authenticated by ?st2-api-key matches the
        README's rule; a hostile value in the body reaches the command as one
        quoted word; other events and branches start nothing (those two are
        sent with &wait= so that the answer says so once they are processed).
        """
        d = await startDaemon(self)
        response, rule = await d.post("/v1/rules", GITHUB_RULE)
        self.assertEqual(response.code, 201, rule)
        url = d.apiURL + f"/v1/webhooks/github?st2-api-key={d.apiKey}"
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": "72d3162e"}
        evil = "abc; touch /tmp/bwcd-readme-pwned"
        sent = []
        for event, ref, wait in (("push", "refs/heads/main", ""), ("push", "refs/heads/dev", "&wait=30"), ("issues", "refs/heads/main", "&wait=30")):
            response = await treq.post(url + wait, data=json.dumps({"ref": ref, "after": evil}).encode(), headers=dict(headers, **{"X-GitHub-Event": event}))
            answer = await response.json()
            self.assertEqual(response.code, 200 if wait else 202, answer)
            if wait:
                self.assertEqual((answer["trigger_instance"]["status"], answer["executions"]), ("processed", []))
            sent.append(response.headers.getRawHeaders("X-BWC-Trigger-Instance")[0])
        [started] = await d.ruleExecutions(sent[0], 1)
        self.assertEqual((await d.waitFor(started))["status"], "succeeded")
        _, executions = await d.get("/v1/executions?action=core.local")
        _, instances = await d.get("/v1/triggerinstances")
        self.assertEqual(len(executions), 1)
        self.assertEqual(executions[0]["trigger_instance"]["id"], sent[0])
        self.assertEqual(executions[0]["result"]["stdout"], "deploying " + evil)
        payload = executions[0]["trigger_instance"]["payload"]
        self.assertEqual(payload["headers"]["X-Github-Event"], "push")
        self.assertNotIn("St2-Api-Key", payload["headers"])
        self.assertNotIn(d.apiKey, json.dumps(instances))
        self.assertNotIn(d.apiKey, d.readLog())
