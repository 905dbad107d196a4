// Drive a running invops server with node-opcua's client, as UaExpert-style clients do.
//
//   node tests/e2e/node_opcua_client.mjs <scenario> <endpoint url> <pki dir>
//
// scenario "none":   SecurityPolicy None; the client presents its application instance
//                    certificate in CreateSession (node-opcua always does, like UaExpert).
//                    Anonymous: browse Objects/Inventory/PLANT1/TANKFARM/TK-101, read Level
//                    with EngineeringUnits and EURange, subscribe and collect changes; then as
//                    operator: call Inventory/Ledger/PostReceipt, once to an unknown unit;
//                    then a wrong password.
// scenario "secure": Basic256Sha256 SignAndEncrypt as operator with the client's own
//                    certificate (made in <pki dir> on first use): reports whether the session
//                    was refused and with which status, or what it read.
//
// Prints one JSON document on stdout with what the server answered; the Python test judges it.
// Exits 2 when the packages cannot be found, 1 on an unexpected error (message on stderr).
// Packages come from NODE_PATH's first entry, else <repo>/.tools/node/node_modules.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PLANT_URI = "urn:invops:ua:plant";
const TYPES_URI = "urn:invops:ua:types";

const here = path.dirname(fileURLToPath(import.meta.url));
const fromEnv = (process.env.NODE_PATH || "").split(path.delimiter).find(Boolean);
const modulesDir = path.resolve(fromEnv || path.join(here, "../../.tools/node/node_modules"));
let opcua;
let certificates;
try {
    const require = createRequire(path.join(modulesDir, "noop.js"));
    opcua = require("node-opcua-client");
    certificates = require("node-opcua-certificate-manager");
} catch (error) {
    console.error(`node-opcua-client not found under ${modulesDir}: ${error.message}`);
    process.exit(2);
}
const {
    AttributeIds,
    ClientMonitoredItem,
    ClientSubscription,
    MessageSecurityMode,
    OPCUAClient,
    SecurityPolicy,
    TimestampsToReturn,
    UserTokenType,
    Variant,
    DataType,
    makeBrowsePath,
} = opcua;

const { OPCUACertificateManager } = certificates;

const [scenario, endpointUrl, pkiDir] = process.argv.slice(2);

function makeClient(securityMode, securityPolicy) {
    const clientCertificateManager = new OPCUACertificateManager({
        rootFolder: pkiDir,
        automaticallyAcceptUnknownCertificate: true, // the demo server's self-signed certificate
    });
    return OPCUAClient.create({
        applicationName: "invops-e2e-node-opcua",
        applicationUri: "urn:invops:e2e:node-opcua-client",
        clientCertificateManager,
        securityMode,
        securityPolicy,
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        requestedSessionTimeout: 30000,
    });
}

function statusName(error) {
    const text = String(error && error.message);
    const match = text.match(/Bad[A-Za-z_]+/);
    return match ? match[0] : text;
}

async function nodeIdOf(session, relativePath) {
    const result = await session.translateBrowsePath(makeBrowsePath("i=84", relativePath));
    if (!result.statusCode.isGood() || !result.targets || result.targets.length === 0) {
        throw new Error(`browse path ${relativePath}: ${result.statusCode.toString()}`);
    }
    return result.targets[0].targetId;
}

async function namespaces(session) {
    const array = (await session.readNamespaceArray()) || [];
    const plant = array.indexOf(PLANT_URI);
    const types = array.indexOf(TYPES_URI);
    if (plant < 0 || types < 0) throw new Error(`namespaces missing: ${array.join(", ")}`);
    return { plant, types };
}

async function readLevel(session, ns) {
    const unit = `/Objects/${ns.plant}:Inventory/${ns.plant}:PLANT1/${ns.plant}:TANKFARM/${ns.plant}:TK-101`;
    const unitId = await nodeIdOf(session, unit);
    const browsed = await session.browse(unitId.toString());
    const children = browsed.references.map((r) => r.browseName.name);
    const levelId = await nodeIdOf(session, `${unit}/${ns.types}:Level`);
    const euId = await nodeIdOf(session, `${unit}/${ns.types}:Level.EngineeringUnits`);
    const rangeId = await nodeIdOf(session, `${unit}/${ns.types}:Level.EURange`);
    const [level, eu, range] = await session.read([
        { nodeId: levelId, attributeId: AttributeIds.Value },
        { nodeId: euId, attributeId: AttributeIds.Value },
        { nodeId: rangeId, attributeId: AttributeIds.Value },
    ]);
    const units = eu.value.value;
    const limits = range.value.value;
    return {
        levelId,
        children,
        level: {
            value: level.value.value,
            status: level.statusCode.name,
            sourceTimestamp: level.sourceTimestamp ? level.sourceTimestamp.toISOString() : null,
        },
        engineeringUnits: {
            namespaceUri: units.namespaceUri,
            unitId: units.unitId,
            displayName: units.displayName.text,
        },
        euRange: { low: limits.low, high: limits.high },
    };
}

async function collectChanges(session, levelId, count, withinMs) {
    const subscription = ClientSubscription.create(session, {
        requestedPublishingInterval: 100,
        requestedLifetimeCount: 100,
        requestedMaxKeepAliveCount: 10,
        maxNotificationsPerPublish: 100,
        publishingEnabled: true,
        priority: 1,
    });
    const values = [];
    const item = ClientMonitoredItem.create(
        subscription,
        { nodeId: levelId, attributeId: AttributeIds.Value },
        { samplingInterval: 100, discardOldest: true, queueSize: 10 },
        TimestampsToReturn.Both,
    );
    await new Promise((resolve) => {
        const timer = setTimeout(resolve, withinMs);
        item.on("changed", (dataValue) => {
            values.push(dataValue.value.value);
            if (values.length >= count) {
                clearTimeout(timer);
                resolve();
            }
        });
    });
    await subscription.terminate();
    return values;
}

async function postReceipt(session, ns, lot, key, toUnit = "WH-401") {
    const ledger = await nodeIdOf(session, `/Objects/${ns.plant}:Inventory/${ns.plant}:Ledger`);
    const method = await nodeIdOf(
        session,
        `/Objects/${ns.plant}:Inventory/${ns.plant}:Ledger/${ns.types}:PostReceipt`,
    );
    const text = (value) => new Variant({ dataType: DataType.String, value });
    const result = await session.call({
        objectId: ledger,
        methodId: method,
        inputArguments: [
            text("GLYCOL"),
            text(lot),
            new Variant({ dataType: DataType.Double, value: 250.0 }),
            text("kg"),
            text(toUnit),
            text(key),
            text("delivery 4711 (node-opcua e2e)"),
        ],
    });
    return {
        status: result.statusCode.name,
        outputs: (result.outputArguments || []).map((v) => v.value),
        inputArgumentResults: (result.inputArgumentResults || []).map((c) => c.name),
        inputArgumentReasons: (result.inputArgumentDiagnosticInfos || []).map(
            (d) => (d && d.additionalInfo) || null,
        ),
    };
}

async function withSession(client, identity, body) {
    const session = await client.createSession(identity);
    try {
        return await body(session);
    } finally {
        await session.close();
    }
}

async function noneScenario() {
    const client = makeClient(MessageSecurityMode.None, SecurityPolicy.None);
    await client.connect(endpointUrl);
    try {
        const anonymous = await withSession(client, { type: UserTokenType.Anonymous }, async (s) => {
            const ns = await namespaces(s);
            const read = await readLevel(s, ns);
            const changes = await collectChanges(s, read.levelId, 3, 15000);
            const denied = await postReceipt(s, ns, "GLY-NODE-ANON", "node-opcua-anon");
            delete read.levelId;
            return { ...read, changes, anonymousPost: denied };
        });
        const operator = await withSession(
            client,
            { type: UserTokenType.UserName, userName: "operator", password: "operator" },
            async (s) => {
                const ns = await namespaces(s);
                const posted = await postReceipt(s, ns, "GLY-NODE-1", "node-opcua-e2e-1");
                const refused = await postReceipt(s, ns, "GLY-NODE-2", "node-opcua-e2e-2", "TK-999");
                return { ...posted, refused };
            },
        );
        let wrongPassword;
        try {
            await withSession(
                client,
                { type: UserTokenType.UserName, userName: "operator", password: "not-it" },
                async () => "accepted",
            );
            wrongPassword = "accepted";
        } catch (error) {
            wrongPassword = statusName(error);
        }
        return { scenario: "none", anonymous, operator, wrongPassword };
    } finally {
        await client.disconnect();
    }
}

async function secureScenario() {
    const client = makeClient(MessageSecurityMode.SignAndEncrypt, SecurityPolicy.Basic256Sha256);
    const certificateFile = client.certificateFile;
    try {
        await client.connect(endpointUrl);
    } catch (error) {
        return { scenario: "secure", refused: statusName(error), certificateFile };
    }
    try {
        const result = await withSession(
            client,
            { type: UserTokenType.UserName, userName: "operator", password: "operator" },
            async (s) => {
                const ns = await namespaces(s);
                const read = await readLevel(s, ns);
                return { level: read.level.value };
            },
        );
        return { scenario: "secure", refused: null, certificateFile, ...result };
    } catch (error) {
        return { scenario: "secure", refused: statusName(error), certificateFile };
    } finally {
        await client.disconnect();
    }
}

const scenarios = { none: noneScenario, secure: secureScenario };
try {
    if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
    const result = await scenarios[scenario]();
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(0);
} catch (error) {
    console.error(error && error.stack ? error.stack : String(error));
    process.exit(1);
}
