// Prints, as JSON {case: base64 update}, updates a stock Yjs client can produce that the value
// policy must refuse before merge (plus one it must accept). Used by tests/sync/test_yupdate.py.
import * as Y from 'yjs'

const withRecord = (fill, collection = 'vehicles', id = 'v-1') => {
  const doc = new Y.Doc()
  const record = new Y.Map()
  doc.getMap(collection).set(id, record)
  record.set('name', 'Hostile')
  fill(record, doc)
  return Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64')
}

let deep = 0
for (let i = 0; i < 5000; i++) deep = [deep]

const cases = {
  ok_plain_record: withRecord(r => r.set('stops', [{ name: 'a', lon: 13.4, lat: 52.5 }])),
  nul_in_name: withRecord(r => r.set('name', 'a\u0000b')),
  nested_5000: withRecord(r => r.set('notes', deep)),
  nan: withRecord(r => r.set('speed_limit_kph', NaN)),
  infinity: withRecord(r => r.set('speed_limit_kph', Infinity)),
  undefined_value: withRecord(r => r.set('notes', undefined)),
  binary_value: withRecord(r => r.set('notes', new Uint8Array([1, 2, 3]))),
  y_text_field: withRecord(r => r.set('notes', new Y.Text('typed'))),
  y_array_field: withRecord(r => r.set('stops', Y.Array.from([1, 2]))),
  y_xml_field: withRecord(r => r.set('notes', new Y.XmlElement('p'))),
  subdocument_field: withRecord(r => r.set('notes', new Y.Doc())),
  nested_y_map: withRecord(r => r.set('notes', new Y.Map())),
  text_record: (() => {
    const doc = new Y.Doc()
    doc.getMap('drivers').set('d-1', new Y.Text('not a record'))
    return Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64')
  })(),
  unknown_root: (() => {
    const doc = new Y.Doc()
    doc.getText('scratchpad').insert(0, 'hello')
    return Buffer.from(Y.encodeStateAsUpdate(doc)).toString('base64')
  })(),
  id_200kb: withRecord(() => {}, 'vehicles', 'x'.repeat(200 * 1024)),
  id_with_newline: withRecord(() => {}, 'routes', 'bad\nid'),
}
process.stdout.write(JSON.stringify(cases))
