from twisted.application.service import ServiceMaker

bwcd = ServiceMaker("bwcd", "bwcd.tap", "StackStorm-compatible webhook, rule and execution daemon", "bwcd")
