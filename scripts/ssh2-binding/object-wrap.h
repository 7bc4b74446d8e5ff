// Force-included (-include) when scripts/build-ssh2-binding.ts compiles ssh2's crypto binding, in place of Node's
// own node_object_wrap.h (this file defines that header's include guard first, so Node's is skipped).
//
// Why: since Node 23, node::ObjectWrap registers an environment cleanup hook in its constructor and removes it in its
// destructor through v8::Isolate::GetCurrent(). When V8 collects a wrapper in a GC that runs with no context entered
// (a GC task between callbacks), that removal finds no Environment and Node aborts the process
// ("Assertion failed: (env) != nullptr" in node::RemoveEnvironmentCleanupHook). ssh2 makes a cipher object per key
// exchange, so a busy server collects them all the time and aborted within seconds under load.
// This ObjectWrap has the same interface and the behaviour of Node 22 and earlier: no cleanup hook, the object is
// freed by its weak callback only. At process exit the remaining ciphers are not deleted, as before Node 23; ssh2
// frees their OpenSSL contexts itself when a connection ends.
#ifndef SRC_NODE_OBJECT_WRAP_H_
#define SRC_NODE_OBJECT_WRAP_H_

#include <cassert>
#include "node.h"
#include "v8.h"

namespace node {

class ObjectWrap {
 public:
  ObjectWrap() : refs_(0) {}

  virtual ~ObjectWrap() {
    if (handle_.IsEmpty()) return;
    handle_.ClearWeak();
    handle_.Reset();
  }

  template <class T>
  static inline T* Unwrap(v8::Local<v8::Object> object) {
    assert(!object.IsEmpty());
    assert(object->InternalFieldCount() > 0);
    return static_cast<T*>(static_cast<ObjectWrap*>(object->GetAlignedPointerFromInternalField(0)));
  }

  inline v8::Local<v8::Object> handle() { return handle(v8::Isolate::GetCurrent()); }

  inline v8::Local<v8::Object> handle(v8::Isolate* isolate) {
    return v8::Local<v8::Object>::New(isolate, handle_);
  }

  inline v8::Persistent<v8::Object>& persistent() { return handle_; }

 protected:
  inline void Wrap(v8::Local<v8::Object> object) {
    assert(handle_.IsEmpty());
    assert(object->InternalFieldCount() > 0);
    object->SetAlignedPointerInInternalField(0, this);
    handle_.Reset(v8::Isolate::GetCurrent(), object);
    MakeWeak();
  }

  inline void MakeWeak() {
    handle_.SetWeak(this, WeakCallback, v8::WeakCallbackType::kParameter);
  }

  virtual void Ref() {
    assert(!handle_.IsEmpty());
    handle_.ClearWeak();
    refs_++;
  }

  virtual void Unref() {
    assert(!handle_.IsEmpty());
    assert(!handle_.IsWeak());
    assert(refs_ > 0);
    if (--refs_ == 0) MakeWeak();
  }

  int refs_;

 private:
  static void WeakCallback(const v8::WeakCallbackInfo<ObjectWrap>& info) {
    ObjectWrap* wrap = info.GetParameter();
    assert(wrap->refs_ == 0);
    wrap->handle_.Reset();
    delete wrap;
  }

  v8::Persistent<v8::Object> handle_;
};

}  // namespace node

#endif  // SRC_NODE_OBJECT_WRAP_H_
