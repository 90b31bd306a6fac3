"""
Packaging for bwcd.

C{twisted.plugins} is listed as a package so that a plain C{pip install .}
puts C{twisted/plugins/bwcd_plugin.py} where C{twistd} looks for plugins.
"""

from setuptools import find_packages, setup

setup(
    name="bwcd",
    version="0.1.0",
    description="A StackStorm-compatible webhook, rule and execution daemon on Twisted",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["bwcd", "bwcd.*"]) + ["twisted.plugins"],
    package_data={"bwcd": ["packs/core/*.yaml", "packs/core/actions/*", "packs/core/triggers/*", "api/openapi.yaml", "web/*.html", "web/*.css", "web/*.svg", "web/*.txt", "web/js/*.js", "web/js/pages/*.js"]},
    include_package_data=True,
    install_requires=[
        "Twisted[tls]>=26.10,<27",
        "klein>=24.8,<25",
        "treq>=26.7,<27",
        "txmongo>=26.0,<27",
        "pymongo>=4.18,<4.19",
        "PyYAML>=6.0,<7",
        "Jinja2>=3.1.6,<4",
        "jsonschema>=4.26,<5",
        "jsonpath-ng>=1.8,<1.9",
        "bcrypt>=5.0,<6",
        "prometheus-client>=0.26,<1",
        "multipart>=2.0,<3",
        "service-identity>=26.1,<27",
        "attrs>=26.1",
        "google-re2>=1.1,<2",
        "cryptography>=50,<51",
        "APScheduler>=3.11.3,<3.12",
        "python-dateutil>=2.9",
    ],
    extras_require={"test": ["secantusdb==0.7.0b3", "schemathesis==4.32.5", "openapi-spec-validator==0.9.0"]},
    entry_points={"console_scripts": ["bwc = bwcd.cli.main:main", "st2 = bwcd.cli.main:main", "bwcd-admin = bwcd.admin:main"]},
)
