// Load the invops NodeSet2 export into node-opcua (a second OPC UA stack) and check its types.
//
//   node tests/integration/nodeset_check.mjs <invops NodeSet2 xml>
//
// The packages come from NODE_PATH's first entry, else from <repo>/.tools/node/node_modules
// (tools/install-node-opcua.sh installs them there). The standard nodeset is loaded first, in
// a call of its own, so that every loader warning or error raised while the invops file loads
// is about the invops file; any such message fails the check. Prints one JSON summary on
// stdout; exits 1 with the problems on stderr (and in the summary) when anything is wrong,
// 2 when the packages cannot be found.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const TYPES_URI = "urn:invops:ua:types";
const OBJECT_TYPES = [
    ["StorageUnitType", "BaseObjectType"],
    ["TankType", "StorageUnitType"],
    ["SiloType", "StorageUnitType"],
    ["BinType", "StorageUnitType"],
    ["MaterialDefinitionType", "BaseObjectType"],
    ["MaterialLotType", "BaseObjectType"],
    ["LedgerType", "BaseObjectType"],
];
const EVENT_TYPES = [["InventoryMovementEventType", "BaseEventType"]];
const LEDGER_METHODS = [
    "PostReceipt",
    "PostIssue",
    "PostTransfer",
    "PostAdjustment",
    "RecordCount",
    "SetLotStatus",
    "ReverseMovement",
    "PostScrap",
    "PostProduction",
    "ApproveRequest",
    "RejectRequest",
    "SetLotQuality",
    "ClosePeriod",
];

const here = path.dirname(fileURLToPath(import.meta.url));
const modulesDir =
    (process.env.NODE_PATH || "").split(path.delimiter).find(Boolean) ||
    path.resolve(here, "..", "..", ".tools", "node", "node_modules");
const require = createRequire(path.join(modulesDir, "_resolve_from_here.js"));

function fail(code, message) {
    process.stderr.write(`nodeset_check: ${message}\n`);
    process.exit(code);
}

const file = process.argv[2];
if (!file) fail(2, "usage: node nodeset_check.mjs <NodeSet2.xml>");

let addressSpaceLib, nodeJsLib, nodesetsLib, debugLib;
try {
    addressSpaceLib = require("node-opcua-address-space");
    nodeJsLib = require("node-opcua-address-space/nodeJS");
    nodesetsLib = require("node-opcua-nodesets");
    debugLib = require("node-opcua-debug");
} catch (err) {
    fail(2, `node-opcua packages not found under ${modulesDir}: ${err.message}`);
}
const { AddressSpace } = addressSpaceLib;
const { generateAddressSpace } = nodeJsLib;
const { nodesets } = nodesetsLib;

// Every warning and error the loader reports goes through node-opcua-debug's loggers; anything
// else written to the console while loading is caught too.
const util = require("node:util");
let phase = "standard";
const messages = { standard: [], invops: [] };
const record = (level) => (_context, ...args) => {
    messages[phase].push(`${level}: ${util.format(...args)}`);
};
debugLib.setWarningLogger(record("warning"));
debugLib.setErrorLogger(record("error"));
for (const name of ["log", "info", "warn", "error"]) {
    console[name] = (...args) => messages[phase].push(`console.${name}: ${util.format(...args)}`);
}

const problems = [];
const summary = { file: path.resolve(file), namespace: TYPES_URI, ok: false };

const addressSpace = AddressSpace.create();
try {
    await generateAddressSpace(addressSpace, [nodesets.standard]);
} catch (err) {
    problems.push(`standard nodeset failed to load: ${err.stack || err}`);
}
phase = "invops";
try {
    await generateAddressSpace(addressSpace, [path.resolve(file)]);
} catch (err) {
    problems.push(`invops nodeset failed to load: ${err.stack || err}`);
}
phase = "checks";
messages.checks = [];
for (const message of messages.invops) problems.push(`loader ${message}`);
summary.loader_messages = messages.invops;
summary.standard_loader_messages = messages.standard.length;

const nsIndex = addressSpace.getNamespaceIndex(TYPES_URI);
summary.namespace_index = nsIndex;
if (nsIndex < 0) problems.push(`namespace ${TYPES_URI} not registered`);

const qualified = (node) => node?.browseName?.toString() ?? null;

function checkType(name, parentName, find) {
    const node = nsIndex < 0 ? null : find(name, nsIndex);
    if (!node) {
        problems.push(`type ${name} not found in ${TYPES_URI}`);
        return null;
    }
    if (node.browseName.namespaceIndex !== nsIndex) {
        problems.push(`type ${name} has browse name ${qualified(node)}, not in ns=${nsIndex}`);
    }
    const parent = node.subtypeOfObj;
    if (parent?.browseName.name !== parentName) {
        problems.push(`type ${name} is a subtype of ${qualified(parent)}, expected ${parentName}`);
    }
    summary.types[name] = {
        nodeId: node.nodeId.toString(),
        subtypeOf: parent?.browseName.name ?? null,
        isAbstract: node.isAbstract,
        children: node.getComponents().length + node.getProperties().length,
    };
    return node;
}

summary.types = {};
for (const [name, parent] of OBJECT_TYPES) {
    checkType(name, parent, (n, i) => addressSpace.findObjectType(n, i));
}
for (const [name, parent] of EVENT_TYPES) {
    const node = checkType(name, parent, (n, i) => addressSpace.findEventType(n, i));
    const baseEvent = addressSpace.findEventType("BaseEventType");
    if (node && !node.isSubtypeOf(baseEvent)) problems.push(`${name} is not an event type`);
}

const ledger = nsIndex < 0 ? null : addressSpace.findObjectType("LedgerType", nsIndex);
summary.methods = {};
for (const name of LEDGER_METHODS) {
    const method = ledger?.getMethodByName(name, nsIndex);
    if (!method) {
        problems.push(`LedgerType method ${name} not found`);
        continue;
    }
    const inputProperty = method.getPropertyByName("InputArguments");
    if (!inputProperty) {
        problems.push(`LedgerType.${name} has no InputArguments property`);
        continue;
    }
    const dataValue = inputProperty.readValue();
    if (!dataValue.statusCode.isGood()) {
        problems.push(`LedgerType.${name}.InputArguments reads ${dataValue.statusCode.toString()}`);
    }
    const inputs = method.getInputArguments();
    if (!Array.isArray(inputs) || inputs.length === 0) {
        problems.push(`LedgerType.${name}.InputArguments is empty`);
        continue;
    }
    const args = [];
    for (const arg of inputs) {
        const dataType = addressSpace.findDataType(arg.dataType);
        if (!arg.name) problems.push(`LedgerType.${name} has an input argument without a name`);
        if (!dataType) {
            problems.push(`LedgerType.${name} argument ${arg.name}: unknown DataType ${arg.dataType}`);
        }
        args.push({ name: arg.name, dataType: dataType?.browseName.name ?? String(arg.dataType) });
    }
    summary.methods[name] = {
        nodeId: method.nodeId.toString(),
        inputArguments: args,
        outputArguments: method.getOutputArguments().map((a) => a.name),
    };
}

// Every reference of every node of the invops namespace must reach a node in the address space.
let nodeCount = 0;
let referenceCount = 0;
const namespace = nsIndex < 0 ? null : addressSpace.getNamespace(nsIndex);
for (const node of namespace ? namespace.nodeIterator() : []) {
    nodeCount += 1;
    for (const ref of node.allReferences()) {
        referenceCount += 1;
        if (!addressSpace.findNode(ref.nodeId)) {
            problems.push(`${node.nodeId.toString()} (${qualified(node)}): reference to missing ${ref.nodeId.toString()}`);
        }
        if (!addressSpace.findNode(ref.referenceType)) {
            problems.push(`${node.nodeId.toString()}: unknown reference type ${ref.referenceType.toString()}`);
        }
    }
    if (node.nodeClass === 2 /* Variable */ && !node.dataType.isEmpty?.() && !addressSpace.findDataType(node.dataType)) {
        problems.push(`${node.nodeId.toString()} (${qualified(node)}): unknown DataType ${node.dataType.toString()}`);
    }
}
summary.node_count = nodeCount;

// Every node the file declares must have been loaded, and every value it gives must read back.
// The file's own namespace table has the invops URI alone, at index 1.
const declared = [];
const text = readFileSync(file, "utf8");
for (const match of text.matchAll(/<UA(\w+) NodeId="ns=1;([^"]+)"[^>]*>([\s\S]*?)<\/UA\1>/g)) {
    declared.push({ nodeId: `ns=${nsIndex};${match[2]}`, hasValue: match[3].includes("<Value>") });
}
summary.declared_node_count = declared.length;
summary.values_checked = 0;
for (const { nodeId, hasValue } of nsIndex < 0 ? [] : declared) {
    const node = addressSpace.findNode(nodeId);
    if (!node) {
        problems.push(`${nodeId}: declared in the file but not loaded`);
        continue;
    }
    if (!hasValue) continue;
    const dataValue = node.readValue();
    summary.values_checked += 1;
    if (!dataValue.statusCode.isGood() || dataValue.value.value === null) {
        problems.push(
            `${nodeId} (${qualified(node)}): value reads ${dataValue.statusCode.toString()} ${dataValue.value.toString()}`,
        );
    }
}
if (declared.length !== nodeCount) {
    problems.push(`the file declares ${declared.length} nodes, the namespace holds ${nodeCount}`);
}
summary.reference_count = referenceCount;
for (const message of messages.checks) problems.push(`during checks: ${message}`);

summary.problems = problems;
summary.ok = problems.length === 0;
addressSpace.dispose();
process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
if (!summary.ok) {
    for (const problem of problems) process.stderr.write(`nodeset_check: ${problem}\n`);
    process.exit(1);
}
