// The official Node SDK's card callback server, the peer benches/callback.rs measures lark-oncall
// against: the same Encrypt Key and Verification Token, the SDK's own signature check, decryption
// and dispatch (`CardActionHandler` behind `adaptDefault`). It answers every action with a toast;
// it keeps no dedup, durable or not. Prints its port on stdout once listening.
// Usage: node card_callback.js <encrypt-key> <verification-token>
const http = require('node:http');
const lark = require('@larksuiteoapi/node-sdk');

const [encryptKey, verificationToken] = process.argv.slice(2);
if (!encryptKey || !verificationToken) {
  console.error('usage: node card_callback.js <encrypt-key> <verification-token>');
  process.exit(2);
}

let actions = 0;
const handler = new lark.CardActionHandler(
  { encryptKey, verificationToken, loggerLevel: lark.LoggerLevel.error },
  async (data) => {
    if (data.action && data.action.value) actions += 1;
    return { toast: { type: 'info', content: 'ok' } };
  },
);

const server = http.createServer(lark.adaptDefault('/webhook/card', handler, { autoChallenge: true }));
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
process.on('SIGTERM', () => {
  console.error(`actions handled: ${actions}`);
  process.exit(0);
});
