"""Demo and test scaffolding, kept apart from the library layers: the synthetic demo dataset
(``dataset``, ``patterns``, ``hpa demo-data`` in ``cli``), the demo HPAv18 folder (``external``) and the
local HPAv18 server (``loopback``) the download tests and benchmarks talk to. Library modules never
import this package; commands, tests and benchmarks do."""
